"""Rule align: rigid-body StackReg, each slice to the previous one; slice 0 is the frame."""

from fibseg.io import Volume, write_csv
from fibseg.preprocess import align_volume
from fibseg.runtime import start_log

log = start_log(snakemake.log[0])
with Volume(snakemake.params.volume, snakemake.wildcards.ds) as volume:
    log.info("aligning %s, shape %s, dtype %s", volume.spec, volume.shape, volume.dtype)
    transforms = align_volume(volume, snakemake.output.volume, snakemake.params.voxel_size_nm)
write_csv(snakemake.output.transforms, transforms)
log.info(
    "largest shift %.2f px, largest rotation %.3f deg",
    (transforms.tx**2 + transforms.ty**2).max() ** 0.5,
    transforms.angle_deg.abs().max(),
)
