"""Rule export_ome_zarr: one data set's preprocessed EM volume, scores and uncertainty (the
image) and its segmentation (the label image, 1 = pore, 2 = solid) as one OME-Zarr store at
its voxel size (fibseg/io/omezarr.py)."""

import h5py

from fibseg.io.omezarr import write_ome_zarr
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
with (
    h5py.File(snakemake.input.preprocessed, "r") as preprocessed,
    h5py.File(snakemake.input.scores, "r") as scores,
    h5py.File(snakemake.input.segmentation, "r") as segmentation,
):
    shape = scores["scores"].shape
    factors = write_ome_zarr(
        snakemake.output[0],
        em=preprocessed["volume"],
        scores=scores["scores"],
        uncertainty=scores["uncertainty"],
        segmentation=segmentation["segmentation"],
        voxel_nm=snakemake.params.voxel_size_nm,
        name=snakemake.wildcards.ds,
        workers=snakemake.threads,
    )
log.info(
    "wrote %s: image %s (EM, scores, uncertainty) and label image 'segmentation' (1 pore, "
    "2 solid), voxel %s nm (z, y, x), pyramid %s",
    snakemake.output[0],
    shape,
    snakemake.params.voxel_size_nm,
    ["1", *map(str, factors)],
)
