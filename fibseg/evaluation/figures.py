"""Figures 3-9 of the paper, drawn with matplotlib (Agg)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import json
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from ..annotation.regions import IGNORE, RegionSet
from ..annotation.sampling import regions_in
from ..io.atomic import atomic_output
from ..networks.windows import region_in_window
from .postprocess import segment_as_chosen

PORE_COLOUR, SOLID_COLOUR = "#1b9e77", "#d95f02"  # colour-blind safe pair (ColorBrewer Dark2)


def save(figure: plt.Figure, path: str, dpi: int = 120) -> None:
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)


def per_cell(cells: pd.DataFrame, column: str, ylabel: str, title: str, path: str) -> None:
    """A cell metric against n_xy, one line per n_z (Figures 3-5)."""
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for n_z, group in cells.groupby("n_z"):
        group = group.sort_values("n_xy")
        axis.plot(group["n_xy"], group[column], marker="o", label=f"$n_z$ = {n_z}")
    axis.set_xlabel("$n_{xy}$")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save(figure, path)


def learning_curves(
    history: pd.DataFrame,
    title: str,
    path: str,
    cell_runs: pd.DataFrame | None = None,
    rung_epochs: tuple[int, ...] = (),
) -> None:
    """Figure 6: loss and accuracy of train and validation data per epoch; with `cell_runs`
    (collect_histories of the cell's runs) a third panel with every run's validation loss,
    runs pruned by successive halving in grey and the rung ends dotted."""
    panels = 3 if cell_runs is not None else 2
    figure, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.4))
    loss, accuracy = axes[:2]
    epochs = history["epoch"] + 1
    loss.plot(epochs, history["loss"], label="train")
    loss.plot(epochs, history["val_loss"], label="validation")
    loss.set_ylabel("binary cross-entropy")
    accuracy.plot(epochs, history["accuracy"], label="train")
    accuracy.plot(epochs, history["val_accuracy"], label="validation")
    accuracy.set_ylabel("accuracy")
    if cell_runs is not None:
        runs_panel(axes[2], cell_runs, rung_epochs)
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    save(figure, path)


def runs_panel(axis: plt.Axes, cell_runs: pd.DataFrame, rung_epochs: tuple[int, ...]) -> None:
    """Validation loss of every run of a cell: kept runs in colour, pruned ones in grey."""
    for (_seed, pruned), run in cell_runs.groupby(["seed", "pruned"]):
        style = {"color": "0.6", "lw": 0.8, "marker": "o", "ms": 3} if pruned else {"lw": 1.2}
        axis.plot(run["epoch"] + 1, run["val_loss"], **style)
    for end in rung_epochs[:-1]:
        axis.axvline(end, color="k", ls=":", lw=0.8)
    pruned = int(cell_runs.drop_duplicates("run_dir")["pruned"].sum())
    runs = cell_runs["run_dir"].nunique()
    axis.plot([], [], color="0.6", marker="o", ms=3, label=f"pruned ({pruned} of {runs})")
    axis.set_ylabel("validation loss (every run of the cell)")


LABEL_MAP = ListedColormap([PORE_COLOUR, SOLID_COLOUR])
LEGEND = [Patch(color=PORE_COLOUR, label="pore (0)"), Patch(color=SOLID_COLOUR, label="solid (1)")]


def region_panels(rows: list[dict], path: str) -> None:
    """Figure 8: per data set, image, manual, raw score, automatic, the errors and, where the
    rows hold one, the random forest's segmentation."""
    titles = ["image", "manual", "score (P(solid))", "automatic", "errors"]
    if all("forest" in row for row in rows):
        titles.append("random forest")
    figure, axes = plt.subplots(
        len(rows), len(titles), figsize=(2.8 * len(titles), 2.9 * len(rows)), squeeze=False
    )
    for line, row in zip(axes, rows, strict=True):
        image, manual, score, automatic = (
            row[k] for k in ("image", "manual", "score", "automatic")
        )
        line[0].imshow(image, cmap="gray")
        line[1].imshow(image, cmap="gray")
        # unlabelled voxels (IGNORE) of a painted region stay transparent
        painted = np.ma.masked_equal(manual, IGNORE)
        line[1].imshow(painted, cmap=LABEL_MAP, alpha=0.45, vmin=0, vmax=1)
        shown = line[2].imshow(score, cmap="viridis", vmin=0, vmax=1)
        line[3].imshow(image, cmap="gray")
        line[3].imshow(automatic, cmap=LABEL_MAP, alpha=0.45, vmin=0, vmax=1)
        errors = np.zeros((*manual.shape, 4))
        errors[(manual == 1) & (automatic == 0)] = (0.85, 0.1, 0.1, 0.8)  # solid called pore
        errors[(manual == 0) & (automatic == 1)] = (0.1, 0.3, 0.95, 0.8)  # pore called solid
        line[4].imshow(image, cmap="gray")
        line[4].imshow(errors)
        if len(titles) > 5:
            line[5].imshow(image, cmap="gray")
            line[5].imshow(row["forest"], cmap=LABEL_MAP, alpha=0.45, vmin=0, vmax=1)
        line[0].set_ylabel(row["title"])
        figure.colorbar(shown, ax=line[2], fraction=0.046)
        for axis, title in zip(line, titles, strict=True):
            axis.set_title(title, fontsize=9)
            axis.set_xticks([])
            axis.set_yticks([])
    figure.legend(
        handles=[
            *LEGEND,
            Patch(color=(0.85, 0.1, 0.1), label="solid labelled pore"),
            Patch(color=(0.1, 0.3, 0.95), label="pore labelled solid"),
        ],
        loc="lower center",
        ncol=4,
        fontsize=9,
    )
    save(figure, path)


def full_slices(rows: list[dict], path: str, dpi: int = 120) -> None:
    """Figure 9: one full slice per data set, its segmentation and its uncertainty (also the
    README's picture of a result, one data set at a lower `dpi`)."""
    figure, axes = plt.subplots(len(rows), 3, figsize=(13.5, 4.2 * len(rows)), squeeze=False)
    for (left, middle, right), row in zip(axes, rows, strict=True):
        left.imshow(row["image"], cmap="gray")
        left.set_title(f"{row['title']}: data", fontsize=9)
        middle.imshow(row["segmentation"], cmap=LABEL_MAP, vmin=0, vmax=1)
        middle.set_title(f"{row['title']}: segmentation", fontsize=9)
        shown = right.imshow(row["uncertainty"], cmap="magma", vmin=0, vmax=0.5)
        right.set_title(f"uncertainty: {row['uncertainty_kind']}", fontsize=8)
        figure.colorbar(shown, ax=right, fraction=0.046)
        for axis in (left, middle, right):
            axis.set_xticks([])
            axis.set_yticks([])
    figure.legend(handles=LEGEND, loc="lower center", ncol=2, fontsize=9)
    save(figure, path, dpi)


def region_row(
    regions: RegionSet,
    windows: np.ndarray,
    margin: int,
    chosen: dict,
    splits: pd.DataFrame,
    forest: tuple[np.ndarray, int, dict] | None = None,
) -> dict:
    """One line of Figure 8: the data set's first test region, its image, labels, scores
    and the post-processed segmentation; with `forest` (windows, margin, postprocess.json)
    also the forest's post-processed segmentation."""
    index = regions_in(splits, regions.dataset, "test")[0]
    label = regions.labels[index]
    row = {} if forest is None else {"forest": segmented_region(forest, index, label.shape)}
    return row | {
        "title": f"{regions.dataset}, region {index}",
        "image": region_in_window(
            regions.crops[index, regions.margin_z], regions.margin_xy, *label.shape
        ),
        "manual": label,
        "score": region_in_window(windows[index], margin, *label.shape),
        "automatic": segmented_region((windows, margin, chosen), index, label.shape),
    }


def segmented_region(
    scored: tuple[np.ndarray, int, dict], index: int, shape: tuple[int, int]
) -> np.ndarray:
    """The post-processed segmentation of region `index` from (windows, margin, chosen)."""
    windows, margin, chosen = scored
    return region_in_window(segment_as_chosen(windows[index], chosen), margin, *shape)


def slice_row(title: str, volume_path: str, segmentation_path: str, scores_path: str) -> dict:
    """One line of Figure 9: the middle slice of a preprocessed volume, its segmentation and
    the uncertainty of its scores."""
    with (
        h5py.File(volume_path, "r") as volume,
        h5py.File(segmentation_path, "r") as seg,
        h5py.File(scores_path, "r") as scores,
    ):
        middle = volume["volume"].shape[0] // 2
        return {
            "title": title,
            "image": volume["volume"][middle],
            "segmentation": seg["segmentation"][middle],
            "uncertainty": scores["uncertainty"][middle],
            "uncertainty_kind": str(scores.attrs["uncertainty"]),
        }


def read_chosen(path: str) -> dict:
    """A postprocess.json."""
    return json.loads(Path(path).read_text())


def figure8(
    region_files: list[str],
    score_files: list[str],
    postprocess: str,
    splits: pd.DataFrame,
    forest_score_files: list[str],
    forest_postprocess: str | None,
    path: str,
) -> None:
    """Figure 8 from the workflow's files; the forest's column where its files are given."""
    from .evaluate import read_scores

    forests: list = [None] * len(region_files)
    if forest_score_files:
        forest_chosen = read_chosen(forest_postprocess)
        forests = [(*read_scores(file), forest_chosen) for file in forest_score_files]
    rows = [
        region_row(
            RegionSet.read(regions), *read_scores(scores), read_chosen(postprocess), splits, forest
        )
        for regions, scores, forest in zip(region_files, score_files, forests, strict=True)
    ]
    region_panels(rows, path)


CLUSTER_MAP = ListedColormap([SOLID_COLOUR, "#bdbdbd", PORE_COLOUR])


def structure_panels(results: dict[str, dict], map_files: dict[str, str], path: str) -> None:
    """The structure figure, a row per data set: the local-thickness distributions of pore
    and solid, the porosity profiles along z, y and x (segmentation solid, truth dashed),
    and the middle z-plane of the analysis grid coloured by pore cluster."""
    figure, axes = plt.subplots(
        len(results), 4, figsize=(17, 4.2 * len(results)), squeeze=False, layout="constrained"
    )
    styles = {"segmentation": "-", "truth": "--"}
    for line, (name, analyses) in zip(axes, results.items(), strict=True):
        sizes, profiles, *planes = line
        for source, result in analyses.items():
            for phase, colour in (("pore", PORE_COLOUR), ("solid", SOLID_COLOUR)):
                found = result[f"{phase}_size"]
                sizes.plot(
                    found["diameter_nm"],
                    found["volume_fraction"],
                    styles[source],
                    color=colour,
                    marker=".",
                    label=f"{phase}, {source}",
                )
            for axis, colour in zip("zyx", ("#7570b3", "#e7298a", "#66a61e"), strict=True):
                profile = result["porosity"]["profiles"][axis]
                profiles.plot(
                    np.asarray(profile["position_nm"]) / 1000,
                    profile["porosity"],
                    styles[source],
                    color=colour,
                    label=f"along {axis}, {source}",
                )
        sizes.set_xlabel("local thickness (diameter, nm)")
        sizes.set_ylabel("volume fraction of the phase")
        sizes.set_title(f"{name}: pore and solid sizes", fontsize=9)
        profiles.set_xlabel("position (µm)")
        profiles.set_ylabel("porosity")
        profiles.set_title(f"{name}: porosity profiles", fontsize=9)
        for axis in (sizes, profiles):
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
        with h5py.File(map_files[name], "r") as handle:
            for axis, source in zip(planes, ("segmentation", "truth"), strict=True):
                axis.set_xticks([])
                axis.set_yticks([])
                if source not in handle:
                    axis.set_axis_off()
                    continue
                axis.imshow(handle[source]["clusters"][:], cmap=CLUSTER_MAP, vmin=0, vmax=2)
                percolates = "".join(
                    a for a in "zyx" if analyses[source]["connectivity"][f"percolates_{a}"]
                )
                axis.set_title(
                    f"{source}, middle z-plane: largest pore cluster\n"
                    f"(percolates along: {percolates or 'none'})",
                    fontsize=8,
                )
    figure.legend(
        handles=[
            Patch(color=PORE_COLOUR, label="pore, largest cluster"),
            Patch(color="#bdbdbd", label="pore, other clusters"),
            Patch(color=SOLID_COLOUR, label="solid"),
        ],
        loc="outside lower center",
        ncol=3,
        fontsize=9,
    )
    save(figure, path)


def alignment_panel(table: pd.DataFrame, summary: dict, path: str) -> None:
    """A data set's alignment (rule align's alignment.csv and alignment.json): the position of
    every slice in x and y with its uncertainty (the steps' noise summed along the stack,
    ±1 σ·√z), the displacement corrected (0 where the stack is kept as acquired) and the
    drift test's verdict in the title. The paper's chain (method previous) has no positions:
    its corrected displacements alone are shown."""
    figure, axis = plt.subplots(figsize=(6.5, 3.4))
    z = table["z"].to_numpy()
    colours = {"x": "#1b9e77", "y": "#7570b3"}
    for name, colour in colours.items():
        if f"position_{name}" in table:
            position = table[f"position_{name}"].to_numpy()
            spread = table[f"step_sigma_{name}"].to_numpy().max() * np.sqrt(z)
            axis.plot(z, position, color=colour, label=f"position {name}")
            axis.fill_between(z, position - spread, position + spread, color=colour, alpha=0.2)
        axis.plot(z, table[f"t{name}"].to_numpy(), "--", color=colour, label=f"corrected, {name}")
    axis.axhline(0, color="#999999", linewidth=0.8)
    axis.set_xlabel("slice (z)")
    axis.set_ylabel("pixels")
    verdict = summary.get("statement", "").split(":")[0]
    moved = "slices moved" if np.abs(table[["tx", "ty"]].to_numpy()).max() > 0 else "slices kept"
    axis.set_title(
        f"{summary.get('dataset', '')}: {summary.get('method', '')} alignment, {verdict} ({moved})",
        fontsize=9,
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    save(figure, path)
