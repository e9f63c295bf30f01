"""Should the U-Net's window of slices look further behind the face than in front? A study
on a finished demo run, without any change to the network: the demo's aligned volumes are
shifted along z by `--shift` slices (mirrored at the ends), so that the symmetric window of
n_z slices centred on slice z sees the original slices z + shift - n_z//2 ... z + shift +
n_z//2, while the labels, the regions and the truth stay in the original frame. Shift -1
with n_z 3 shows the network slices z-2, z-1, z (the face and what was milled before it);
shift +1 shows z, z+1, z+2 (the face and what lies behind it, which shines through the
pores). Only the U-Net's rows of the study's tables mean anything: Otsu and the forest see
slice z + shift where they should see z.

`prepare` writes a project folder: data/{ds}.tif, datasets.tsv (the volumes marked aligned)
and window.yaml (the demo's settings, the forest and the structure analysis off, n_z as
given). `report` prints the U-Net's full-volume mIoU and porosity error of each folder.

    snakemake --cores all                                    # the demo, in the repository
    python studies/z_window.py prepare --out z_front --shift -1 --n-z 3
    cd z_front && snakemake -s ../Snakefile results/tables/full_volume.csv --cores all \\
        --configfile window.yaml && cd ..                   # about 6 minutes on 2 cores
    python studies/z_window.py report . z_front
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import tifffile
import yaml

from fibseg.networks.windows import mirror_index

REPO = Path(__file__).resolve().parents[1]


def prepare(demo_run: Path, out: Path, shift: int, n_z: int) -> None:
    """Write the shifted volumes, their sheet and the overlay of one study folder."""
    demo = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    (out / "data").mkdir(parents=True, exist_ok=True)
    rows = []
    for name in demo["demo"]:
        with h5py.File(demo_run / "results" / name / "aligned.h5", "r") as handle:
            volume = handle["volume"][:]
        shifted = volume[mirror_index(np.arange(volume.shape[0]) + shift, volume.shape[0])]
        tifffile.imwrite(out / "data" / f"{name}.tif", shifted, photometric="minisblack")
        made = (demo_run / "results" / "demo" / name).resolve()
        rows.append(
            {
                "name": name,
                "volume": f"data/{name}.tif",
                "regions": str(made / "regions.csv"),
                "labels": str(made / "labels.tif"),
                "aligned": "true",
                "truth": str(made / "truth.tif"),
            }
        )
    pd.DataFrame(rows).to_csv(out / "datasets.tsv", sep="\t", index=False)
    overlay = {
        "datasets": "datasets.tsv",
        "sampling": demo["sampling"],
        "grid": {**demo["grid"], "n_z": [n_z]},
        "postprocess": demo["postprocess"],
        "forest": {"enabled": False},
        "structure": {"enabled": False},
        "outputs": {"ome_zarr": False},
    }
    (out / "window.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    print(f"{out}: {len(rows)} data sets shifted by {shift:+d} slices, n_z {n_z}")


def report(folders: list[Path]) -> None:
    """The U-Net's full-volume mIoU and porosity error (points) of each study folder."""
    for folder in folders:
        table = pd.read_csv(folder / "results/tables/full_volume.csv")
        unet = table[table["method"] == "cnn"]
        cells = [
            f"{row.dataset} {row.mIoU:.3f} "
            f"({100 * (row.porosity_automatic - row.porosity_truth):+.1f})"
            for row in unet.itertuples()
        ]
        print(f"{str(folder):12s} " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("prepare", help="write one study folder")
    made.add_argument("--demo-run", type=Path, default=Path("."), help="a finished demo run")
    made.add_argument("--out", type=Path, required=True, help="the study folder to write")
    made.add_argument("--shift", type=int, required=True, help="slices; < 0 looks in front")
    made.add_argument("--n-z", type=int, default=3, help="the window's slices (odd)")
    shown = commands.add_parser("report", help="the U-Net's rows of finished folders")
    shown.add_argument("folders", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.demo_run, args.out, args.shift, args.n_z)
    else:
        report(args.folders)


if __name__ == "__main__":
    main()
