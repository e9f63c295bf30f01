"""Rule align: every slice registered into the frame of slice 0 (config key align)."""

import json

from fibseg.io.atomic import atomic_output
from fibseg.io.volume import Volume
from fibseg.io.writers import write_csv
from fibseg.preprocess.alignment import align_volume, transforms_table
from fibseg.preprocess.registration import check_roi
from fibseg.runtime.job import start_log
from fibseg.runtime.settings import AlignSettings

log = start_log(snakemake.log[0])
settings = AlignSettings.from_config(snakemake.params.align)
ds = snakemake.wildcards.ds
with Volume(snakemake.params.volume, ds) as volume:
    log.info(
        "aligning %s, shape %s, dtype %s: %s", volume.spec, volume.shape, volume.dtype, settings
    )
    check_roi(settings.roi, volume.shape[1:], f"align.roi (data set {ds}, volume {volume.spec})")
    alignment = align_volume(
        volume, snakemake.output.volume, snakemake.params.voxel_size_nm, settings, snakemake.threads
    )
table = transforms_table(alignment.transforms).merge(alignment.slices, on="z")
write_csv(snakemake.output.transforms, table)
write_csv(snakemake.output.pairs, alignment.pairs)
summary = {
    "dataset": ds,
    "method": settings.method,
    "model": settings.model,
    "drift_detected": alignment.drift_detected,
    "statement": alignment.statement,
    "largest_shift_px": float((table.tx**2 + table.ty**2).max() ** 0.5),
    "largest_rotation_deg": float(table.angle_deg.abs().max()),
    "pairs_left_out": int((~alignment.pairs.used).sum()) if "used" in alignment.pairs else 0,
}
with atomic_output(snakemake.output.report) as tmp:
    tmp.write_text(json.dumps(summary, indent=2))
log.info("%s: %s", ds, alignment.statement)
log.info(
    "applied: largest shift %.2f px, largest rotation %.3f deg",
    summary["largest_shift_px"],
    summary["largest_rotation_deg"],
)
