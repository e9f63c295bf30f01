"""Rule export_ome_zarr: the scores and the segmentation of one data set as one OME-Zarr store
(image and label image) with its voxel size."""

import h5py

from fibseg.io.omezarr import write_ome_zarr
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
with (
    h5py.File(snakemake.input.scores, "r") as scores,
    h5py.File(snakemake.input.segmentation, "r") as segmentation,
):
    shape = scores["scores"].shape
    factors = write_ome_zarr(
        snakemake.output[0],
        scores["scores"],
        segmentation["segmentation"],
        snakemake.params.voxel_size_nm,
        snakemake.wildcards.ds,
    )
log.info(
    "wrote %s: scores %s and label image 'segmentation', voxel %s nm (z, y, x), pyramid %s",
    snakemake.output[0],
    shape,
    snakemake.params.voxel_size_nm,
    ["1", *map(str, factors)],
)
