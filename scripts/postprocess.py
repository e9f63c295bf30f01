"""Rule postprocess: the §3.8 pipeline on the whole score volume; HDF5 and a TIFF stack."""

import json

import h5py
import numpy as np

from fibseg.io import write_h5, write_tiff
from fibseg.metrics import porosity
from fibseg.postprocess import segment_as_chosen
from fibseg.runtime import start_log

log = start_log(snakemake.log[0])
settings = json.loads(open(snakemake.input.postprocess).read())
with h5py.File(snakemake.input.scores, "r") as handle:
    scores = handle["scores"][:].astype(np.float32)
solid = segment_as_chosen(scores, settings).astype(np.uint8)
write_h5(
    snakemake.output.h5,
    {"segmentation": solid},
    {**settings, "voxel_size_nm_zyx": snakemake.params.voxel_size_nm},
)
write_tiff(snakemake.output.tif, solid)
log.info("porosity %.4f with %s", porosity(solid), settings)
