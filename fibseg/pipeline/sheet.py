"""The data set sheet: reading it with typed columns, its rows' kinds (annotated by rectangles,
painted, or predict-only), and the files it names that must exist before a run. Messages name
the data set, the file, what was found and the fix."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..io.errors import InputError
from ..io.formats import split_spec, volume_format
from ..io.volume import volume_exists
from ..io.voxel_size import parse_voxel_size

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ANNOTATION_COLUMNS = ("regions", "labels")  # both (rectangles), or neither
TRUE_WORDS, FALSE_WORDS = {"true", "yes", "1"}, {"false", "no", "0", ""}


def check_sheet(sheet: pd.DataFrame, sheet_path: str) -> None:
    """Names are unique and usable in paths; every data set has a volume."""
    duplicated = sorted(set(sheet["name"][sheet["name"].duplicated()]))
    if duplicated:
        raise InputError(
            f"data set names occur more than once: {', '.join(duplicated)}.",
            file=sheet_path,
            fix="give every row of the sheet its own name.",
        )
    for name in sheet["name"]:
        if not NAME_PATTERN.match(str(name)):
            raise InputError(
                f"the name '{name}' cannot be used in file paths.",
                file=sheet_path,
                fix="use letters, digits, '_', '-' and '.' only.",
            )


def read_sheet(path: str) -> pd.DataFrame:
    """The data set sheet (TSV) with typed columns; `aligned` becomes bool, empty truth None."""
    if not Path(path).is_file():
        raise InputError(
            "the data set sheet does not exist.",
            file=path,
            fix="set the config key 'datasets' to a TSV sheet.",
        )
    sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    sheet.columns = [c.strip() for c in sheet.columns]
    sheet = sheet.apply(lambda column: column.str.strip())
    if "aligned" in sheet.columns:
        words = sheet["aligned"].str.lower()
        wrong = sorted(set(words) - TRUE_WORDS - FALSE_WORDS)
        if wrong:
            raise InputError(
                f"column 'aligned' holds {', '.join(wrong)}; true or false is expected.",
                file=path,
                fix="write true or false.",
            )
        sheet["aligned"] = words.isin(TRUE_WORDS)
    for column in ("truth", "voxel_size_nm", "annotation", *ANNOTATION_COLUMNS):
        if column in sheet.columns:
            sheet[column] = sheet[column].astype(object).where(sheet[column] != "", None)
    if "voxel_size_nm" in sheet.columns:
        for name, text in zip(sheet.get("name", sheet.index), sheet["voxel_size_nm"], strict=True):
            if text is not None:
                parse_voxel_size(text, str(name), path)
    for column in ("name", "volume"):
        if column in sheet.columns and (sheet[column] == "").any():
            row = int(sheet.index[sheet[column] == ""][0]) + 2
            raise InputError(
                f"line {row} has an empty '{column}'.",
                file=path,
                fix="fill in every required column.",
            )
    if "name" in sheet.columns:
        check_sheet(sheet, path)
        check_annotation_columns(sheet, path)
    return sheet


def missing_as_none(sheet: pd.DataFrame) -> pd.DataFrame:
    """Empty optional cells as None. Snakemake's schema validation fills the defaults of a
    column that is empty in some rows with NaN, which is truthy."""
    return sheet.astype(object).where(sheet.notna(), None)


def is_painted(row: Mapping[str, object]) -> bool:
    """Whether a sheet row is annotated by a painted label volume (column `annotation`)."""
    return bool(row.get("annotation"))


def is_annotated(row: Mapping[str, object]) -> bool:
    """Whether a sheet row has regions and labels, or a painted annotation (else it is
    segmented only)."""
    return is_painted(row) or all(row.get(column) for column in ANNOTATION_COLUMNS)


def check_annotation_columns(sheet: pd.DataFrame, sheet_path: str) -> None:
    """A row gives both regions and labels (rectangles), or an annotation (painted), or
    none of them (predict-only)."""
    for row in sheet.to_dict("records"):
        given = [column for column in ANNOTATION_COLUMNS if row.get(column)]
        if given and is_painted(row):
            raise InputError(
                f"the sheet gives both '{given[0]}' and 'annotation' (sheet {sheet_path}); "
                "a data set is annotated either by rectangles (regions and labels) or by a "
                "painted label volume (annotation).",
                dataset=str(row["name"]),
                file=str(row["annotation"]),
                fix="empty the 'regions' and 'labels' cells of this row, or its 'annotation' cell.",
            )
        if len(given) == 1:
            missing = next(c for c in ANNOTATION_COLUMNS if c not in given)
            raise InputError(
                f"the sheet gives '{given[0]}' but no '{missing}' (sheet {sheet_path}); an "
                "annotated data set needs both, a predict-only one neither.",
                dataset=str(row["name"]),
                file=str(row[given[0]]),
                fix=f"fill in the '{missing}' column of this row, or empty its "
                f"'{given[0]}' cell to only segment the volume.",
            )


def check_external_inputs(sheet: pd.DataFrame, sheet_path: str, generated_prefix: str) -> None:
    """Files that no rule makes (not under `generated_prefix`) must exist before the run: the
    volume (a file, a `.zarr` folder, or slice files in a folder or glob), the CSV, labels
    and truth."""
    for row in sheet.itertuples():
        for column in ("volume", "regions", "labels", "annotation", "truth"):
            spec = getattr(row, column, None)
            if not spec:
                continue
            path = split_spec(spec)[0]
            if path.startswith(generated_prefix):
                continue
            exists = Path(path).is_file() if column == "regions" else volume_exists(spec)
            if not exists:
                kind = volume_format(path) if column != "regions" else "file"
                what = {
                    "folder": "folder holds no TIFF slices (*.tif, *.tiff)",
                    "glob": "pattern matches no file",
                    "zarr": "Zarr store does not exist",
                }.get(kind, "file does not exist")
                raise InputError(
                    f"the '{column}' {what} (sheet {sheet_path}).",
                    dataset=row.name,
                    file=path,
                    fix="correct the path in the sheet (relative to the working "
                    "directory) or copy the file there.",
                )
