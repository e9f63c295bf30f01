"""The data set sheet: reading it with typed columns, its rows' kinds (annotated by rectangles,
painted, or predict-only), and the files it names that must exist before a run. Every fault of
every row is reported at once (an InputErrors); messages name the data set, the file, what was
found and the fix."""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..io.errors import Faults, InputError, collect
from ..io.formats import split_spec, volume_format
from ..io.volume import volume_exists
from ..io.voxel_size import parse_voxel_size

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ANNOTATION_COLUMNS = ("regions", "labels")  # both (rectangles), or neither
REQUIRED_COLUMNS = ("name", "volume")
TRUE_WORDS, FALSE_WORDS = {"true", "yes", "1"}, {"false", "no", "0", ""}
SCHEMA_FIX = "see workflow/schemas/datasets.schema.yaml (and config/README.md) for its columns."
GENERATED = "results/"  # files that rules make (the demo's volumes): checked when they are made


def check_sheet(sheet: pd.DataFrame, sheet_path: str) -> None:
    """Names are unique and usable in paths (every bad name reported)."""
    with collect() as faults:
        names = sheet["name"][sheet["name"] != ""]
        duplicated = sorted(set(names[names.duplicated()]))
        if duplicated:
            faults.add(
                InputError(
                    f"data set names occur more than once: {', '.join(duplicated)}.",
                    file=sheet_path,
                    fix="give every row of the sheet its own name.",
                )
            )
        for name in dict.fromkeys(names):
            if not NAME_PATTERN.match(str(name)):
                faults.add(
                    InputError(
                        f"the name '{name}' cannot be used in file paths.",
                        file=sheet_path,
                        fix="use letters, digits, '_', '-' and '.' only.",
                    )
                )


def separator(path: str) -> str:
    """The sheet's column separator: a comma for a `.csv` sheet, else a tab. A sheet whose
    header line holds commas but no tabs is not read as one column."""
    if path.lower().endswith(".csv"):
        return ","
    with open(path, encoding="utf-8", errors="replace") as text:
        lines = (line.strip() for line in text)
        header = next((line for line in lines if line and not line.startswith("#")), "")
    if "," in header and "\t" not in header:
        raise InputError(
            f"the sheet must be tab-separated, but its header line '{header}' holds commas "
            "and no tab.",
            file=path,
            fix="separate the columns with tabs, or name the sheet .csv to have it read as "
            'comma-separated (then quote a voxel size: "50,10,10").',
        )
    return "\t"


def check_cell_counts(path: str, sep: str, fix: str) -> None:
    """No line has more (non-empty) cells than the header line: pandas would take the first
    cells of such a sheet for an index and shift the columns."""
    with open(path, newline="", encoding="utf-8", errors="replace") as text:
        lines = csv.reader(text, delimiter=sep)
        rows = [(lines.line_num, cells) for cells in lines]
    rows = [(n, cells) for n, cells in rows if cells and not cells[0].lstrip().startswith("#")]
    with collect() as faults:
        for number, cells in rows[1:]:
            count = len(cells)
            while count and not cells[count - 1].strip():
                count -= 1
            if count > len(rows[0][1]):
                faults.add(
                    InputError(
                        f"line {number} has {count} cells, the header line {len(rows[0][1])}.",
                        file=path,
                        fix=fix,
                    )
                )


def read_sheet(path: str) -> pd.DataFrame:
    """The data set sheet (TSV, or CSV named .csv) with typed columns; `aligned` becomes bool,
    empty truth None. Every fault of every row is raised at once."""
    with collect() as faults:
        sheet = parse_sheet(path, faults)
    return sheet


def parse_sheet(path: str, faults: Faults) -> pd.DataFrame:
    """`read_sheet` whose faults go to `faults`; a sheet that cannot be read raises."""
    if not Path(path).is_file():
        raise InputError(
            "the data set sheet does not exist.",
            file=path,
            fix="set the config key 'datasets' to a TSV sheet.",
        )
    sep = separator(path)
    fix = "give no line more cells than the header line" + (
        ' and quote cells that hold commas ("50,10,10").' if sep == "," else "."
    )
    check_cell_counts(path, sep, fix)
    try:
        with warnings.catch_warnings():  # empty cells past the header's are dropped
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            sheet = pd.read_csv(
                path, sep=sep, dtype=str, keep_default_na=False, comment="#", index_col=False
            )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        kind = "comma" if sep == "," else "tab"
        raise InputError(
            f"cannot be read as a {kind}-separated sheet ({' '.join(str(error).split())}).",
            file=path,
            fix=fix,
        ) from None
    sheet = sheet.fillna("")  # the cells that a short line lacks are empty
    sheet.columns = [c.strip() for c in sheet.columns]
    sheet = sheet.apply(lambda column: column.str.strip())
    names = [str(name) for name in sheet.get("name", [""] * len(sheet))]
    if "aligned" in sheet.columns:
        words = sheet["aligned"].str.lower()
        for name, word in zip(names, words, strict=True):
            if word not in TRUE_WORDS | FALSE_WORDS:
                faults.add(
                    InputError(
                        f"column 'aligned' holds {word}; true or false is expected.",
                        dataset=name or None,
                        file=path,
                        fix="write true or false.",
                    )
                )
        sheet["aligned"] = words.isin(TRUE_WORDS)
    for column in ("truth", "voxel_size_nm", "annotation", *ANNOTATION_COLUMNS):
        if column in sheet.columns:
            sheet[column] = sheet[column].astype(object).where(sheet[column] != "", None)
    if "voxel_size_nm" in sheet.columns:
        for name, text in zip(names, sheet["voxel_size_nm"], strict=True):
            if text is not None:
                with faults.check():
                    parse_voxel_size(text, name or None, path)
    for column in REQUIRED_COLUMNS:
        if column in sheet.columns:
            for index in sheet.index[sheet[column] == ""]:
                faults.add(
                    InputError(
                        f"line {int(index) + 2} has an empty '{column}'.",
                        file=path,
                        fix="fill in every required column.",
                    )
                )
    if "name" in sheet.columns:
        with faults.check():
            check_sheet(sheet, path)
        with faults.check():
            check_annotation_columns(sheet, path)
    return sheet


def schema_problem(error: Exception) -> str:
    """What Snakemake's schema validation found, and where: its ValidationError line and the
    key it was found on (the rest of its message is the schema)."""
    lines = str(error).splitlines()
    found = [line.removeprefix("ValidationError: ") for line in lines if "Error: " in line]
    where = [line.rstrip(":") for line in lines if line.startswith("On instance")]
    return " ".join(found[:1] + [f"({w.lower()})" for w in where[:1]]) or lines[0]


def validate_sheet(sheet: pd.DataFrame, schema: str, path: str, faults: Faults) -> pd.DataFrame:
    """The sheet validated against its schema (Snakemake's validate, which fills the
    defaults): unknown and missing columns once, then every row that breaks it (rows with an
    empty name or volume are `parse_sheet`'s); faults go to `faults`."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    rules = yaml.safe_load(Path(schema).read_text())
    unknown = [column for column in sheet.columns if column not in rules["properties"]]
    missing = [column for column in rules.get("required", []) if column not in sheet.columns]
    if unknown:
        faults.add(
            InputError(
                f"the sheet has unknown column(s) {', '.join(unknown)}; the known columns are "
                f"{', '.join(rules['properties'])}.",
                file=path,
                fix="correct or delete the column(s) in the header line; " + SCHEMA_FIX,
            )
        )
    if missing:
        faults.add(
            InputError(
                f"the sheet lacks the required column(s) {', '.join(missing)}.",
                file=path,
                fix="add them to the header line; " + SCHEMA_FIX,
            )
        )
        return sheet
    sheet = sheet.drop(columns=unknown)
    try:
        validate(sheet, schema)
        return sheet
    except WorkflowError:
        pass  # find every row that breaks it
    rows = []
    for index in range(len(sheet)):
        row = sheet.iloc[[index]].copy()
        name, volume = (str(row[column].iloc[0]) for column in REQUIRED_COLUMNS)
        try:
            if name and volume:
                validate(row, schema)
        except WorkflowError as error:
            faults.add(
                InputError(
                    f"the row does not match the sheet's schema: {schema_problem(error)}",
                    dataset=name,
                    file=path,
                    fix=SCHEMA_FIX,
                )
            )
        rows.append(row)
    return pd.concat(rows) if rows else sheet


def load_sheet(
    path: str, schema: str, generated_prefix: str, faults: Faults | None = None
) -> pd.DataFrame:
    """The sheet as the workflow uses it: read (`read_sheet`), validated against `schema`
    (defaults filled), empty cells None, its external files present. Every fault is raised
    at once, or, given `faults`, added to it (a sheet that cannot be read still raises)."""
    with nullcontext(faults) if faults is not None else collect() as found:
        sheet = validate_sheet(parse_sheet(path, found), schema, path, found)
        sheet = missing_as_none(sheet)
        with found.check():
            check_external_inputs(sheet, path, generated_prefix)
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


@dataclass(frozen=True)
class Dataset:
    """One row of the sheet as the workflow uses it (`load_sheet`), empty cells None."""

    name: str
    volume: str
    regions: str | None = None
    labels: str | None = None
    annotation: str | None = None  # a painted label volume instead of regions and labels
    aligned: bool = False  # true: rule align is skipped
    truth: str | None = None
    voxel_size_nm: str | None = None  # the sheet's "z,y,x" nm; None: the volume's, the config's

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Dataset:
        return cls(
            **{
                f.name: row.get(f.name, None if f.default is MISSING else f.default)
                for f in fields(cls)
            }
        )

    @property
    def painted(self) -> bool:
        return is_painted(asdict(self))

    @property
    def annotated(self) -> bool:
        """Regions and labels, or a painted annotation (else it is only segmented)."""
        return is_annotated(asdict(self))

    @property
    def external(self) -> bool:
        """Whether its volume comes from outside the run (no rule makes it)."""
        return not str(self.volume).startswith(GENERATED)


def check_annotation_columns(sheet: pd.DataFrame, sheet_path: str) -> None:
    """A row gives both regions and labels (rectangles), or an annotation (painted), or
    none of them (predict-only); every row that does not is reported."""
    with collect() as faults:
        for row in sheet.to_dict("records"):
            given = [column for column in ANNOTATION_COLUMNS if row.get(column)]
            if given and is_painted(row):
                faults.add(
                    InputError(
                        f"the sheet gives both '{given[0]}' and 'annotation' (sheet "
                        f"{sheet_path}); a data set is annotated either by rectangles (regions "
                        "and labels) or by a painted label volume (annotation).",
                        dataset=str(row["name"]),
                        file=str(row["annotation"]),
                        fix="empty the 'regions' and 'labels' cells of this row, or its "
                        "'annotation' cell.",
                    )
                )
            elif len(given) == 1:
                missing = next(c for c in ANNOTATION_COLUMNS if c not in given)
                faults.add(
                    InputError(
                        f"the sheet gives '{given[0]}' but no '{missing}' (sheet {sheet_path}); "
                        "an annotated data set needs both, a predict-only one neither.",
                        dataset=str(row["name"]),
                        file=str(row[given[0]]),
                        fix=f"fill in the '{missing}' column of this row, or empty its "
                        f"'{given[0]}' cell to only segment the volume.",
                    )
                )


def check_external_inputs(sheet: pd.DataFrame, sheet_path: str, generated_prefix: str) -> None:
    """Files that no rule makes (not under `generated_prefix`) must exist before the run: the
    volume (a file, a `.zarr` folder, or slice files in a folder or glob), the CSV, labels
    and truth. Every missing file is reported."""
    with collect() as faults:
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
                    faults.add(
                        InputError(
                            f"the '{column}' {what} (sheet {sheet_path}).",
                            dataset=getattr(row, "name", None),
                            file=path,
                            fix="correct the path in the sheet (relative to the working "
                            "directory) or copy the file there.",
                        )
                    )
