"""The users' volume through the whole workflow: wall time, peak RSS and bytes written of every
rule, and the whole run's time.

A synthetic film of `--slices` x `--height` x `--width` (default 200 x 2247 x 3372, the paper's
size, 1.5 G voxels) is written as a folder of uint16 TIFF slices with its truth (a folder of
uint8 slices): a smooth random field in x-y, correlated over a few slices in z, thresholded at
porosity ~0.35, with blur and noise. It is made slice by slice, so its memory does not grow
with the depth. The default workflow then segments it in a project folder of its own:

- with a bundle (the default): `pretrained` names a U-Net (n_z 3) saved with random weights
  (seed 0), or `--bundle FOLDER` a real bundle (`fibseg export-model`); nothing is trained, so
  the time is that of a user who reuses a model. The network's work per voxel is the same for
  any weights; post-processing and the structure analysis depend somewhat on the segmentation.
- with `--train`: regions of 96 x 96 labelled from the truth, the config's training and the
  random forest, as a user's first run.

Per rule: jobs, wall seconds (summed over jobs, and the longest job; Snakemake's benchmark
files, results/benchmarks/), the largest peak RSS of any job (the exact peak each job's log
ends with; Snakemake's sampled max_rss where a log has none), the bytes its outputs hold at the
end (temporary outputs, such as the score chunks, are gone by then) and the run's wall time.

    python benchmarks/scale.py                                   # 200 x 2247 x 3372, bundle
    python benchmarks/scale.py --slices 16                       # a quick look at full width
    python benchmarks/scale.py --slices 16 --train               # first run, with training
    python benchmarks/scale.py --slices 8 --height 256 --width 2048 --cores 2 --out /tmp/s
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import yaml
from scipy import ndimage

from fibseg.runtime.job import PEAK_LINE

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FULL = (200, 2247, 3372)
POROSITY = 0.35
REGION = 96
POSTPROCESS = {"sigma": 1.0, "threshold": 0.5, "min_object_voxels": 100}


def film_slices(shape: tuple[int, int, int], seed: int = 0):
    """(image uint16, truth uint8) of each slice of a synthetic film, one slice at a time."""
    rng = np.random.default_rng(seed)
    _, height, width = shape
    field = ndimage.gaussian_filter(rng.standard_normal((height, width), np.float32), 4)
    level = np.float32(np.quantile(field, POROSITY))
    for _ in range(shape[0]):
        fresh = ndimage.gaussian_filter(rng.standard_normal((height, width), np.float32), 4)
        field = np.float32(0.8) * field + np.float32(0.6) * fresh  # keeps its spread
        truth = (field > level).astype(np.uint8)  # 1 = solid
        image = ndimage.gaussian_filter(truth.astype(np.float32), 1.0) * 24000 + 18000
        image += rng.normal(0, 3500, image.shape).astype(np.float32)
        yield np.clip(image, 0, 65535).astype(np.uint16), truth


def write_film(data: Path, shape: tuple[int, int, int], seed: int = 0) -> list[np.ndarray]:
    """data/volume/ and data/truth/ (a TIFF per slice); returns every 8th truth slice's
    first rows, from which `write_regions` cuts labels."""
    (data / "volume").mkdir(parents=True, exist_ok=True)
    (data / "truth").mkdir(parents=True, exist_ok=True)
    kept = []
    for z, (image, truth) in enumerate(film_slices(shape, seed)):
        tifffile.imwrite(data / "volume" / f"slice_{z:04d}.tif", image)
        tifffile.imwrite(data / "truth" / f"slice_{z:04d}.tif", truth)
        kept.append(truth[: 4 * REGION, : 4 * REGION] if z % 8 == 4 else None)
    return kept


def write_regions(data: Path, kept: list[np.ndarray | None]) -> None:
    """data/regions.csv and data/labels.tif: four 96 x 96 regions on every 8th slice,
    labelled from the truth."""
    rows, labels = [], []
    for z, truth in enumerate(kept):
        if truth is None:
            continue
        for corner in range(4):
            y, x = REGION * corner, REGION * ((corner * 3) % 4)
            rows.append({"z": z, "y": y, "x": x, "height": REGION, "width": REGION})
            labels.append(truth[y : y + REGION, x : x + REGION])
    pd.DataFrame(rows).to_csv(data / "regions.csv", index=False)
    tifffile.imwrite(data / "labels.tif", np.stack(labels))


def write_random_bundle(folder: Path) -> dict[str, str]:
    """A U-Net (n_z 3) with random weights (seed 0) and a post-processing file."""
    from fibseg.networks.unet import build_unet

    folder.mkdir(parents=True, exist_ok=True)
    build_unet(3, seed=0).save(folder / "model.keras")
    (folder / "postprocess.json").write_text(json.dumps(POSTPROCESS))
    return {"model": str(folder / "model.keras"), "postprocess": str(folder / "postprocess.json")}


def write_project(
    project: Path, shape: tuple[int, int, int], train: bool, bundle: Path | None
) -> None:
    """The film, its sheet and an overlay of the default config (config/scale.yaml)."""
    data = project / "data"
    kept = write_film(data, shape)
    regions = "\t\t"
    if train:
        write_regions(data, kept)
        regions = "\tdata/regions.csv\tdata/labels.tif"
    (project / "config").mkdir(exist_ok=True)
    sheet = "name\tvolume\tregions\tlabels\taligned\ttruth\n"
    sheet += f"film\tdata/volume/{regions}\tfalse\tdata/truth/\n"
    (project / "config" / "datasets.tsv").write_text(sheet)
    overlay: dict = {"datasets": "config/datasets.tsv", "voxel_size_nm": [10, 5, 5]}
    if not train:
        pretrained = {"bundle": str(bundle)} if bundle else write_random_bundle(project / "bundle")
        overlay["pretrained"] = pretrained
    (project / "config" / "scale.yaml").write_text(yaml.safe_dump(overlay))


def snakemake(cores: int, *args: str) -> list[str]:
    """The workflow's command line in a project folder, with the default config (which the
    Snakefile loads) and the project's overlay."""
    return [
        *(sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")),
        *("--cores", str(cores), "--configfile", "config/scale.yaml", *args),
    ]


def run_workflow(project: Path, cores: int, env: dict[str, str] | None = None) -> float:
    """`snakemake --cores N` on the project, with `env` added to the environment; returns its
    wall seconds."""
    command = snakemake(cores)
    start = time.perf_counter()
    with open(project / "snakemake.log", "w") as log:
        done = subprocess.run(
            command,
            cwd=project,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    if done.returncode:
        tail = (project / "snakemake.log").read_text()[-4000:]
        raise RuntimeError(f"snakemake failed in {project} (snakemake.log):\n{tail}")
    return time.perf_counter() - start


def rule_of(path: Path, root: Path) -> str:
    """The rule of a benchmark or log file: ROOT/RULE.ext or ROOT/RULE/WILDCARDS.ext."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else path.stem


def logged_peaks(project: Path) -> pd.Series:
    """Per rule, the largest peak RSS (MB) its jobs logged (fibseg.runtime.job.PEAK_LINE,
    exact where Snakemake's benchmark samples)."""
    pattern = re.compile(PEAK_LINE.replace("%.0f", r"(\d+)"))
    root = project / "logs"
    peaks: dict[str, float] = {}
    for path in root.rglob("*.log"):
        found = [float(m) for m in pattern.findall(path.read_text(errors="replace"))]
        if found:
            rule = rule_of(path, root)
            peaks[rule] = max(peaks.get(rule, 0.0), *found)
    return pd.Series(peaks, name="peak_mb", dtype=float)


def rule_benchmarks(project: Path) -> pd.DataFrame:
    """Per rule: jobs, summed and longest wall seconds, largest peak RSS (MB)."""
    root = project / "results" / "benchmarks"
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        frame = pd.read_csv(path, sep="\t")
        rows.append(
            {"rule": rule_of(path, root), "s": frame.s.iloc[-1], "max_rss": frame.max_rss.iloc[-1]}
        )
    jobs = pd.DataFrame(rows)
    table = jobs.groupby("rule").agg(
        jobs=("s", "size"),
        wall_s=("s", "sum"),
        longest_s=("s", "max"),
        peak_rss_mb=("max_rss", "max"),
    )
    return table.join(logged_peaks(project), how="left")


def disk_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def output_bytes(project: Path, cores: int) -> pd.Series:
    """Bytes of each rule's outputs now (`snakemake --summary` names the rule of each)."""
    summary = subprocess.run(
        snakemake(cores, "--summary"),
        cwd=project,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lines = [line.split("\t") for line in summary.splitlines() if "\t" in line]
    frame = pd.DataFrame(lines[1:], columns=lines[0])
    frame["bytes"] = [disk_bytes(project / path) for path in frame.output_file]
    return frame.groupby("rule").bytes.sum()


def rule_table(project: Path, cores: int) -> pd.DataFrame:
    """Per rule: the benchmark columns and the bytes written; the largest first."""
    table = rule_benchmarks(project).join(output_bytes(project, cores), how="outer")
    table["bytes"] = table["bytes"].fillna(0)
    return table.sort_values("wall_s", ascending=False)


def markdown(table: pd.DataFrame, shape: tuple[int, int, int], wall_s: float, cores: int) -> str:
    voxels = int(np.prod(shape))
    lines = [
        f"{shape[0]} x {shape[1]} x {shape[2]} ({voxels / 1e9:.2f} G voxels), {cores} cores: "
        f"whole run {wall_s:,.0f} s",
        "",
        "| rule | jobs | wall s (sum) | longest job s | peak RSS GB | MB written |",
        "|---|---|---|---|---|---|",
    ]
    for rule, row in table.iterrows():
        jobs = "" if pd.isna(row.jobs) else f"{int(row.jobs)}"
        wall = "" if pd.isna(row.wall_s) else f"{row.wall_s:,.1f}"
        longest = "" if pd.isna(row.longest_s) else f"{row.longest_s:,.1f}"
        peak = row.peak_mb if not pd.isna(row.peak_mb) else row.peak_rss_mb
        rss = "" if pd.isna(peak) else f"{peak / 1024:.2f}"
        lines.append(f"| {rule} | {jobs} | {wall} | {longest} | {rss} | {row.bytes / 1e6:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=FULL[0])
    parser.add_argument("--height", type=int, default=FULL[1])
    parser.add_argument("--width", type=int, default=FULL[2])
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--train", action="store_true", help="train (regions from the truth)")
    parser.add_argument("--bundle", type=Path, help="a bundle folder instead of random weights")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "scale")
    args = parser.parse_args()
    shape = (args.slices, args.height, args.width)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    start = time.perf_counter()
    write_project(args.out, shape, args.train, args.bundle)
    print(f"film of {shape} written in {time.perf_counter() - start:.0f} s to {args.out}/data")
    wall_s = run_workflow(args.out, args.cores)
    table = rule_table(args.out, args.cores)
    table.to_csv(args.out / "rules.csv")
    print(markdown(table, shape, wall_s, args.cores))


if __name__ == "__main__":
    main()
