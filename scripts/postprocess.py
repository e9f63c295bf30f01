"""Rule postprocess: the §3.8 pipeline streamed slab by slab (memory scales with the slab,
not the volume); HDF5 and a TIFF stack."""

import json

import h5py

from fibseg.evaluation.postprocess import write_segmentation
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
settings = json.loads(open(snakemake.input.postprocess).read())
slab_depth = snakemake.params.slab_depth
with h5py.File(snakemake.input.scores, "r") as handle:
    scores = handle["scores"]
    log.info("%s scores %s in slabs of %d slices", scores.dtype, scores.shape, slab_depth)
    porosity = write_segmentation(
        scores,
        settings,
        snakemake.output.h5,
        snakemake.output.tif,
        {
            **settings,
            "voxel_size_nm_zyx": snakemake.params.voxel_size_nm,
            # the first slice scored (rule stitch's; the forest may score a block)
            **{k: int(v) for k, v in handle.attrs.items() if k == "first_slice"},
        },
        slab_depth,
        snakemake.params.voxel_size_nm,
    )
log.info("porosity %.4f with %s", porosity, settings)
