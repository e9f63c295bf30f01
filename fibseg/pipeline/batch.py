"""A batch of volumes segmented with one model bundle (`fibseg predict INPUT... -o DIR` and
`--batch FOLDER`): which volumes a folder holds, where each segmentation goes, and the loop
that segments them with the model loaded once, reporting each volume's result."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..inference.pretrained import Pretrained
from ..io.errors import InputError
from ..io.formats import TIFF_SUFFIXES, ZARR_SUFFIX
from .predict import (
    FORMATS,
    VOLUME_SUFFIXES,
    LoadedModel,
    PredictOutputs,
    segment_volume,
    volume_stem,
)


def folder_volumes(folder: str | os.PathLike, output_dir: Path | None = None) -> list[str]:
    """The volumes directly inside `folder`, by name: 3-D TIFF, HDF5 (dataset /volume) and
    MRC files, Zarr stores, and folders of 2-D TIFF slices. Hidden entries, other files and
    `output_dir` (the segmentations' folder, refused as `folder` itself) are passed over."""
    folder = Path(folder)
    fix = "give --batch a folder that holds the volumes, each a file, a .zarr store or a "
    fix += "folder of 2-D TIFF slices; or name the volumes themselves as INPUTs."
    if not folder.is_dir():
        raise InputError(
            "the --batch folder does not exist or is no folder.", file=str(folder), fix=fix
        )
    skip = output_dir.resolve() if output_dir is not None else None
    if folder.resolve() == skip:
        raise InputError(
            "the --batch folder is also the output folder (-o): the segmentations would be "
            "taken for volumes the next time.",
            file=str(folder),
            fix="give -o another folder, e.g. a subfolder (it is passed over).",
        )
    found = []
    for entry in sorted(folder.iterdir()):
        lower = entry.name.lower()
        if lower.startswith(".") or entry.resolve() == skip:
            continue
        if entry.is_dir():
            slices = any(
                child.suffix.lower() in TIFF_SUFFIXES and not child.name.startswith(".")
                for child in entry.iterdir()
            )
            if lower.endswith(ZARR_SUFFIX) or slices:
                found.append(str(entry))
        elif lower.endswith(VOLUME_SUFFIXES):
            found.append(str(entry))
    if not found:
        raise InputError("the --batch folder holds no volume.", file=str(folder), fix=fix)
    return found


def batch_jobs(inputs: list[str], directory: Path, form: str) -> list[tuple[str, PredictOutputs]]:
    """Each volume of a batch with where it goes: `directory`/{volume_stem}_segmentation and
    the ending of `form` (a key of FORMATS). Two volumes of one name are refused before any
    work."""
    taken: dict[Path, str] = {}
    for spec in inputs:
        output = directory / f"{volume_stem(spec)}_segmentation{FORMATS[form]}"
        if output in taken:
            raise InputError(
                f"the volumes '{taken[output]}' and '{spec}' would both be written to '{output}'.",
                file=spec,
                fix="segment volumes of the same name in separate calls (another --output-dir).",
            )
        taken[output] = spec
    return [(spec, PredictOutputs(output)) for output, spec in taken.items()]


@dataclass(frozen=True)
class BatchResult:
    """One volume of a batch: its summary once segmented, else what went wrong."""

    spec: str
    output: Path
    summary: dict | None = None
    error: str | None = None


def describe_error(error: Exception) -> str:
    """An error as a batch reports it: bad input as its message, a fault of fibseg (a bug)
    with its type too."""
    if isinstance(error, (InputError, OSError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def segment_batch(
    pretrained: Pretrained,
    jobs: list[tuple[str, PredictOutputs]],
    config: dict,
    voxel_nm: tuple[float, float, float] | None = None,
    aligned: bool = False,
    log: logging.Logger | None = None,
) -> Iterator[BatchResult]:
    """Each (volume, outputs) of `jobs` segmented as `segment_volume` does, in order, with the
    model loaded once; yields each volume's result when it is done. A volume that fails is
    logged and reported (BatchResult.error) and the batch goes on; the outputs finished are
    kept. A model that does not load ends the batch with its error: no volume could be
    segmented."""
    log = log or logging.getLogger("fibseg")
    models = LoadedModel()
    for number, (spec, outputs) in enumerate(jobs, start=1):
        log.info("volume %d/%d: %s -> %s", number, len(jobs), spec, outputs.segmentation)
        try:
            summary = segment_volume(
                pretrained, spec, outputs, config, voxel_nm, aligned, log, models
            )
        except Exception as error:
            if models.tried and models.members is None:
                raise
            problem = describe_error(error)
            unexpected = not isinstance(error, (InputError, OSError))
            log.error(
                "volume %d/%d: %s failed: %s", number, len(jobs), spec, problem, exc_info=unexpected
            )
            yield BatchResult(spec, outputs.segmentation, error=problem)
            continue
        log.info(
            "volume %d/%d: %s segmented, porosity %.4f: %s (%s)",
            number,
            len(jobs),
            spec,
            summary["porosity"],
            outputs.segmentation,
            summary["labels"],
        )
        yield BatchResult(spec, outputs.segmentation, summary)
