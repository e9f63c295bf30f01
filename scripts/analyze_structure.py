"""Rule analyze_structure: pore-structure metrics of a segmentation and, where the data set
has one, of its ground truth (fibseg.structure)."""

import json

import h5py

from fibseg.io.atomic import atomic_output
from fibseg.io.volume import read_volume
from fibseg.io.writers import write_h5
from fibseg.runtime.job import start_log
from fibseg.runtime.settings import StructureSettings
from fibseg.structure.analysis import analyze, json_safe


def solid_volume(name):
    if name == "truth":
        return read_volume(snakemake.params.truth, snakemake.wildcards.ds)
    with h5py.File(snakemake.input.segmentation, "r") as handle:
        return handle["segmentation"][:]


log = start_log(snakemake.log[0])
settings = StructureSettings.from_config(snakemake.params.structure)
voxel_nm = snakemake.params.voxel_size_nm
results, maps = {}, {}
for name in ["segmentation"] + (["truth"] if snakemake.params.truth else []):
    log.info("analysing the %s", name)
    results[name], planes = analyze(solid_volume(name), voxel_nm, settings, log)
    maps |= {f"{name}/{key}": plane for key, plane in planes.items()}
write_h5(snakemake.output.maps, maps)
with atomic_output(snakemake.output.json) as tmp:
    tmp.write_text(json.dumps(json_safe(results), indent=1, allow_nan=False))
