"""The correct-and-retrain loop (`fibseg to-annotation`): a segmentation (1 = solid, 0 = pore),
and where given the corrections painted over it (napari Labels: 1 = pore, 2 = solid, 0 =
unpainted), turned into the painted `annotation` volume that the sheet takes: 0 unlabelled,
1 pore, 2 solid (fibseg.pipeline.checks.PAINTED)."""

from __future__ import annotations

import re

import numpy as np

from ..io.errors import InputError

UNLABELLED, PORE, SOLID = 0, 1, 2
SLICE_CHOICES = ("all", "corrected", "none")


def chosen_slices(
    text: str, depth: int, corrected: np.ndarray | None, where: str = "--slices"
) -> np.ndarray:
    """Which slices of the segmentation become labels (a bool per slice): `all`,
    `corrected` (those in which a correction is painted), `none` (only the painted voxels), or
    0-based numbers and ranges, `0,4,10-12`."""
    text = text.strip().lower()
    chosen = np.zeros(depth, bool)
    if text == "all":
        chosen[:] = True
    elif text == "corrected":
        if corrected is None:
            raise InputError(
                f"{where} corrected needs the painted corrections.",
                fix="give --corrected LABELS, or choose the slices: --slices all or 0,4,10-12.",
            )
        chosen[:] = (corrected > 0).reshape(depth, -1).any(axis=1)
    elif text != "none":
        if not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", text.replace(" ", "")):
            raise InputError(
                f"{where} is '{text}'; all, corrected, none or slice numbers are expected.",
                fix="write e.g. --slices 0,4,10-12 (0-based, ranges inclusive).",
            )
        for part in text.replace(" ", "").split(","):
            first, _, last = part.partition("-")
            start, stop = int(first), int(last or first)
            if stop >= depth or start > stop:
                raise InputError(
                    f"{where} names slices {part}, but the segmentation has slices 0-{depth - 1}.",
                    fix="give 0-based slice numbers within the volume.",
                )
            chosen[start : stop + 1] = True
    return chosen


def to_annotation(
    segmentation: np.ndarray,
    corrected: np.ndarray | None = None,
    slices: str = "all",
    segmentation_file: str = "",
    corrected_file: str = "",
) -> np.ndarray:
    """The painted annotation (uint8: 0 unlabelled, 1 pore, 2 solid): the segmentation's
    class on the chosen slices (`chosen_slices`), and every painted correction wherever it
    is, over it. The files are named in the errors."""
    values = np.unique(segmentation)
    if not set(values.tolist()) <= {0, 1}:
        hint = (
            " It holds 2: it looks like painted labels (1 pore, 2 solid), which go to --corrected."
            if 2 in values
            else ""
        )
        raise InputError(
            f"the segmentation holds values {values[:10].tolist()}; 0 (pore) and 1 (solid) "
            f"are expected.{hint}",
            file=segmentation_file,
            fix="give fibseg's segmentation (results/{ds}/segmentation.tif, or fibseg "
            "predict's output), corrected or not, as SEGMENTATION.",
        )
    if corrected is not None:
        if corrected.shape != segmentation.shape:
            raise InputError(
                f"the corrections have shape {corrected.shape} but the segmentation "
                f"{segmentation.shape} (z, y, x).",
                file=corrected_file,
                fix="paint the corrections in a labels layer over the segmentation itself "
                "(same slices, same size) and save the whole layer.",
            )
        wrong = sorted(set(np.unique(corrected).tolist()) - {UNLABELLED, PORE, SOLID})
        if wrong:
            raise InputError(
                f"the corrections hold values {wrong[:10]}; only 0 (unpainted), 1 (pore) and 2 "
                "(solid) are allowed.",
                file=corrected_file,
                fix="paint with label 1 for pore and 2 for solid only, and leave the rest 0.",
            )
    chosen = chosen_slices(slices, segmentation.shape[0], corrected)
    annotation = np.zeros(segmentation.shape, np.uint8)
    annotation[chosen] = segmentation[chosen].astype(np.uint8) + 1
    if corrected is not None:
        painted = corrected > 0
        annotation[painted] = corrected[painted]
    if not (annotation == PORE).any() or not (annotation == SOLID).any():
        raise InputError(
            "the annotation would not label both pore and solid voxels.",
            file=corrected_file or segmentation_file,
            fix="choose more slices (--slices all) or paint voxels of both classes.",
        )
    return annotation
