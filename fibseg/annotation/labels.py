"""A painted annotation's label values as a tool exported them, mapped onto fibseg's own (0
unlabelled, 1 pore, 2 solid) by the config key `annotation_labels`: ilastik numbers its labels
in the order they were added (the first label 1, the second 2, ...), napari paints whatever
label number was chosen. 0 is always unlabelled; any value that the key does not name is an
error (a label that must not count, such as a third class, goes under `unlabelled`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..io.errors import InputError, LimitError

UNLABELLED, PORE, SOLID = 0, 1, 2
KEY = "annotation_labels"
DEFAULT_LABELS: dict[str, list[int]] = {"pore": [PORE], "solid": [SOLID], "unlabelled": []}


def label_lists(mapping: Mapping[str, Sequence[int]] | None) -> dict[str, list[int]]:
    """The pore, solid and unlabelled values of `mapping` (the config key; None: 1 pore,
    2 solid), each value once; 0 counts as unlabelled always."""
    mapping = {**DEFAULT_LABELS, **dict(mapping or {})}
    return {name: sorted({int(v) for v in mapping[name]}) for name in DEFAULT_LABELS}


def check_annotation_labels(mapping: Mapping[str, Sequence[int]] | None) -> None:
    """Every value stands for one class only, and 0 (unlabelled) for neither pore nor solid."""
    lists = label_lists(mapping)
    seen: dict[int, str] = {UNLABELLED: "unlabelled"}
    for name, values in lists.items():
        for value in values:
            if seen.get(value, name) != name:
                raise LimitError(
                    f"label value {value} is given for both {seen[value]} and {name}.",
                    "give each label value under one of pore, solid and unlabelled "
                    "(0 is always unlabelled).",
                    KEY,
                )
            seen[value] = name


def allowed_values(lists: Mapping[str, list[int]]) -> str:
    """'0 (unlabelled), 1 (pore) and 2 (solid)'."""
    pairs = [(UNLABELLED, "unlabelled")] + [
        (value, name) for name in ("pore", "solid", "unlabelled") for value in lists[name]
    ]
    words = [f"{value} ({name})" for value, name in pairs]
    return ", ".join(words[:-1]) + f" and {words[-1]}" if len(words) > 1 else words[0]


def painted_labels(
    annotation: np.ndarray,
    mapping: Mapping[str, Sequence[int]] | None,
    dataset: str | None = None,
    path: str | None = None,
) -> np.ndarray:
    """The annotation in fibseg's values (uint8: 0 unlabelled, 1 pore, 2 solid) by
    `mapping` (the config key `annotation_labels`); an InputError lists the values found when
    one of them is not in the mapping."""
    lists = label_lists(mapping)
    values = np.unique(annotation)
    known = {UNLABELLED, *lists["pore"], *lists["solid"], *lists["unlabelled"]}
    wrong = [v for v in values.tolist() if v not in known]
    if wrong:
        raise InputError(
            f"the annotation holds values {wrong[:10]}; only {allowed_values(lists)} are "
            f"allowed (config key {KEY}; all values found: {values[:20].tolist()}).",
            dataset=dataset,
            file=path,
            fix=f"give each label value its class in the config key {KEY}, e.g. "
            f"'{KEY}: {{pore: [2], solid: [1], unlabelled: [3]}}' (ilastik numbers its labels "
            "in the order they were added; docs/labels.md), or paint with only those values.",
        )
    labels = np.zeros(annotation.shape, np.uint8)
    labels[np.isin(annotation, lists["pore"])] = PORE
    labels[np.isin(annotation, lists["solid"])] = SOLID
    return labels
