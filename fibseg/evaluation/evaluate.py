"""Tables 2 and 3 of the paper, the porosity t-tests and the global-Otsu baseline.

Every figure is computed on the full annotated regions (not the sampled voxels), pooled per
data set and split; "Combined" pools all data sets.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from skimage.filters import threshold_otsu

from ..annotation.regions import RegionSet, known
from ..annotation.sampling import SPLITS, regions_in
from ..networks.windows import region_in_window
from .metrics import (
    accuracy_from_confusion,
    confusion,
    miou_from_confusion,
    porosity,
    porosity_ttest,
)
from .postprocess import segment_as_chosen

COMBINED = "Combined"


@dataclass
class RegionResult:
    """One annotated region: its labels (IGNORE where unlabelled) and a binary prediction
    (True = solid); only its labelled voxels are scored."""

    dataset: str
    region: int
    split: str
    labels: np.ndarray
    prediction: np.ndarray


def metrics_table(results: list[RegionResult], method: str) -> pd.DataFrame:
    """Rows (dataset, metric), columns train/val/test, as in Tables 2-3."""
    frame = pd.DataFrame(
        [
            {
                "dataset": r.dataset,
                "split": r.split,
                "counts": confusion(r.labels, r.prediction),
                "manual": np.count_nonzero(r.labels == 0),
                "automatic": np.count_nonzero(~r.prediction.astype(bool) & known(r.labels)),
                "voxels": np.count_nonzero(known(r.labels)),
            }
            for r in results
        ]
    )
    rows = []
    groups = [*sorted(frame.dataset.unique()), COMBINED]
    for name in groups:
        chosen = frame if name == COMBINED else frame[frame.dataset == name]
        values = {"mIoU": {}, "accuracy": {}, "porosity_manual": {}, "porosity_automatic": {}}
        for split in SPLITS:
            part = chosen[chosen.split == split]
            if part.empty:
                continue
            counts = np.sum(list(part["counts"]), axis=0)
            values["mIoU"][split] = miou_from_confusion(counts)
            values["accuracy"][split] = accuracy_from_confusion(counts)
            values["porosity_manual"][split] = part.manual.sum() / part.voxels.sum()
            values["porosity_automatic"][split] = part.automatic.sum() / part.voxels.sum()
        for metric, by_split in values.items():
            rows.append({"dataset": name, "method": method, "metric": metric, **by_split})
    return pd.DataFrame(rows, columns=["dataset", "method", "metric", *SPLITS])


def ttest_table(results: list[RegionResult]) -> pd.DataFrame:
    """Two-sample t-test of manual against automatic region porosities per data set (all
    splits merged, regions taken as independent, as in the paper)."""
    rows = []
    for name in sorted({r.dataset for r in results}):
        mine = [r for r in results if r.dataset == name]
        manual = np.array([porosity(r.labels) for r in mine])
        automatic = np.array(
            [porosity(r.prediction.astype(np.uint8), known(r.labels)) for r in mine]
        )
        statistic, p_value = porosity_ttest(manual, automatic)
        rows.append(
            {
                "dataset": name,
                "regions": len(mine),
                "manual_mean": manual.mean(),
                "automatic_mean": automatic.mean(),
                "t": statistic,
                "p_value": p_value,
            }
        )
    return pd.DataFrame(rows)


def volume_row(dataset: str, truth: np.ndarray, segmentation: np.ndarray) -> dict:
    """Full-volume agreement with a ground truth (only the synthetic demo has one)."""
    return slicewise_volume_row(dataset, zip(truth, segmentation, strict=True))


def slicewise_volume_row(dataset: str, pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict:
    """`volume_row` from (truth, segmentation) pairs of slices, one at a time: counts are
    summed, so a volume of any depth is held a slice at a time."""
    counts = np.zeros((2, 2), np.int64)
    pores, knowns = np.zeros(2, np.int64), np.zeros(2, np.int64)
    voxels = 0
    for truth, segmentation in pairs:
        counts += confusion(truth, segmentation)
        for which, image in enumerate((truth, segmentation)):
            mask = known(image)
            pores[which] += np.count_nonzero((np.asarray(image) == 0) & mask)
            knowns[which] += np.count_nonzero(mask)
        voxels += np.asarray(truth).size
    return {
        "dataset": dataset,
        "mIoU": miou_from_confusion(counts),
        "accuracy": accuracy_from_confusion(counts),
        "porosity_truth": float(pores[0] / knowns[0]),
        "porosity_automatic": float(pores[1] / knowns[1]),
        "voxels": int(voxels),
    }


def region_results(
    windows: np.ndarray,
    margin: int,
    labels: np.ndarray,
    dataset: str,
    splits: pd.DataFrame,
    predict,
) -> list[RegionResult]:
    """RegionResults of one data set; `predict(window)` gives the solid mask of a window."""
    assigned = splits[splits.dataset == dataset].set_index("region")["split"]
    results = []
    for index, (window, label) in enumerate(zip(windows, labels, strict=True)):
        solid = region_in_window(predict(window), margin, *label.shape)
        results.append(RegionResult(dataset, index, assigned[index], label, solid))
    return results


def read_scores(path: str) -> tuple[np.ndarray, int]:
    """Region score windows and their margin from a region_scores.h5."""
    import h5py

    with h5py.File(path, "r") as handle:
        return handle["scores"][:], int(handle.attrs["margin"])


def otsu_results(regions: RegionSet, splits: pd.DataFrame) -> list[RegionResult]:
    """The floor: one global Otsu threshold of the data set's preprocessed intensities (its
    region contexts), applied to each region's annotated slice."""
    threshold = threshold_otsu(regions.crops)
    centre = regions.crops[:, regions.margin_z]
    return region_results(
        centre, regions.margin_xy, regions.labels, regions.dataset, splits, lambda x: x > threshold
    )


def region_tables(
    region_sets: list[RegionSet],
    scores: dict[str, list[tuple[np.ndarray, int]]],
    chosen: dict[str, dict],
    splits: pd.DataFrame,
) -> dict[str, pd.DataFrame]:
    """Table 2 (scores > 0.5), Table 3 (post-processed with each method's chosen sigma and T)
    and the porosity t-tests of the CNN, for every scored method and the Otsu floor.

    `scores[method][i]` holds the (windows, margin) of `region_sets[i]`, `chosen[method]` that
    method's postprocess.json."""
    raw: dict[str, list[RegionResult]] = {method: [] for method in scores}
    post: dict[str, list[RegionResult]] = {method: [] for method in scores}
    otsu: list[RegionResult] = []
    for index, regions in enumerate(region_sets):
        name, labels = regions.dataset, regions.labels
        for method, per_dataset in scores.items():
            windows, margin = per_dataset[index]
            settings = chosen[method]
            raw[method] += region_results(windows, margin, labels, name, splits, lambda w: w > 0.5)
            post[method] += region_results(
                windows, margin, labels, name, splits, lambda w, s=settings: segment_as_chosen(w, s)
            )
        otsu += otsu_results(regions, splits)
    floor = metrics_table(otsu, "otsu")
    return {
        "table2": pd.concat([*(metrics_table(raw[m], m) for m in scores), floor]),
        "table3": pd.concat([*(metrics_table(post[m], m) for m in scores), floor]),
        "ttest": ttest_table(post["cnn"]),
    }


def split_windows(
    scores: list[tuple[np.ndarray, int]],
    region_sets: list[RegionSet],
    splits: pd.DataFrame,
    split: str,
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Score windows and labels of every region in `split`, over all data sets, and their one
    common margin (windows of different margins cannot be post-processed alike)."""
    margins = {margin for _, margin in scores}
    if len(margins) != 1:
        raise ValueError(
            f"region score files have different margins {sorted(margins)}; re-run "
            "predict_regions for every data set with the same postprocess.sigma_grid."
        )
    windows, labels = [], []
    for (data, _), regions in zip(scores, region_sets, strict=True):
        for index in regions_in(splits, regions.dataset, split):
            windows.append(data[index])
            labels.append(regions.labels[index])
    return windows, labels, margins.pop()


def otsu_volume(volume_spec: str) -> np.ndarray:
    """The floor on a whole volume: solid where the preprocessed intensity exceeds the global
    Otsu threshold of the volume (from a histogram of 1024 bins built slice by slice)."""
    return np.stack(list(otsu_slices(volume_spec))).astype(np.uint8)


def otsu_slices(volume_spec: str) -> Iterator[np.ndarray]:
    """`otsu_volume` a slice at a time (uint8, 1 = solid): the volume is read twice, once
    for the histogram and once for the slices."""
    from ..io.volume import Volume

    edges = np.linspace(0, 1, 1025)
    with Volume(volume_spec) as volume:
        counts = sum(np.histogram(volume.read(z, z + 1), edges)[0] for z in range(len(volume)))
        threshold = threshold_otsu(hist=(counts, (edges[:-1] + edges[1:]) / 2))
        for image in slices_of(volume):
            yield (image > threshold).astype(np.uint8)


def slices_of(volume, first: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Slices `first` to `stop - 1` (default: all) of a `fibseg.io.volume.Volume`, in turn."""
    for z in range(first, len(volume) if stop is None else stop):
        yield volume.read(z, z + 1)[0]


def volume_rows(
    datasets: list[str],
    truth_specs: list[str],
    segmentations: dict[str, list[str]],
    preprocessed: list[str],
) -> list[dict]:
    """full_volume.csv: every method's whole segmentation (or the block of slices it
    segmented, `first_slice` on; column `slices`), and the Otsu floor of the preprocessed
    volume, against each data set's truth; every volume is read a slice at a time."""
    import h5py

    from ..io.volume import Volume

    rows = []
    for index, (name, spec) in enumerate(zip(datasets, truth_specs, strict=True)):
        with Volume(spec, name) as truth:
            for method, paths in segmentations.items():
                with h5py.File(paths[index], "r") as handle:
                    segmentation = handle["segmentation"]
                    first = int(handle.attrs.get("first_slice", 0))
                    stop = first + len(segmentation)
                    pairs = zip(slices_of(truth, first, stop), segmentation, strict=True)
                    row = slicewise_volume_row(name, pairs)
                rows.append({"method": method} | row | {"slices": f"{first}-{stop - 1}"})
            pairs = zip(slices_of(truth), otsu_slices(preprocessed[index]), strict=True)
            row = slicewise_volume_row(name, pairs) | {"slices": f"0-{len(truth) - 1}"}
            rows.append({"method": "otsu"} | row)
    return rows
