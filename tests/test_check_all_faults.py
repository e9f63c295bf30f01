"""Every fault in one check: `fibseg check`, the sheet's checks and the workflow's load-time
checks report the faults of every row and every data set at once (an InputErrors, one fault a
line), and a sheet that is not tab-separated says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, imwrite, run_snakemake

from fibseg.cli import main
from fibseg.io.errors import Faults, InputError, InputErrors, check_all, collect
from fibseg.pipeline.sheet import (
    check_external_inputs,
    load_sheet,
    parse_sheet,
    read_sheet,
    validate_sheet,
)

SHEET = "config/datasets.tsv"
SHEET_SCHEMA = str(REPO / "workflow/schemas/datasets.schema.yaml")
HEADER = "name\tvolume\tregions\tlabels\tvoxel_size_nm\n"
GOOD = "EXT\tdata/vol.tif\tdata/regions.csv\tdata/labels.tif\t\n"


def run(capsys, *args) -> tuple[int, str]:
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def project(external, monkeypatch):
    """The valid external project of tests/helpers.py, as the working directory."""
    monkeypatch.chdir(external)
    return external


def error_of(check, *args) -> InputError:
    with pytest.raises(InputError) as caught:
        check(*args)
    return caught.value


# --- the collector ---------------------------------------------------------------------------


def test_collect_raises_every_fault_once_and_a_lone_fault_as_itself():
    first = InputError("one.", dataset="A", file="a.tif", fix="do this.")
    second = InputError("two.", dataset="B")
    with pytest.raises(InputErrors) as caught:
        with collect() as faults:
            with faults.check():
                raise first
            with faults.check():
                raise InputErrors([second, first])  # nested: flattened, `first` once
            with faults.check():
                pass
    assert caught.value.errors == [first, second]
    assert str(caught.value) == (
        "2 problems in the inputs:\n"
        "- data set 'A', file 'a.tif': one. Fix: do this.\n"
        "- data set 'B': two."
    )
    assert isinstance(caught.value, InputError)  # caught wherever an InputError is
    with pytest.raises(InputError) as lone:
        with collect() as faults:
            faults.add(first)
    assert lone.value is first  # its message as before, no count
    with collect():  # nothing found: nothing raised
        pass


def test_a_fault_that_ends_the_checks_is_raised_with_those_found_before():
    with pytest.raises(InputErrors) as caught:
        with collect() as faults:
            faults.add(InputError("found first."))
            raise InputError("cannot go on.")
    assert [e.problem for e in caught.value.errors] == ["found first.", "cannot go on."]
    assert Faults().datasets() == set()


def test_check_all_runs_every_item():
    def positive(value: int) -> None:
        if value < 0:
            raise InputError(f"{value} is negative.", dataset=str(value))

    error = error_of(check_all, positive, [1, -2, 3, -4])
    assert isinstance(error, InputErrors)
    assert [e.dataset for e in error.errors] == ["-2", "-4"]


# --- the sheet ---------------------------------------------------------------------------------


def test_read_sheet_reports_every_fault_of_every_row(tmp_path):
    sheet = tmp_path / "s.tsv"
    sheet.write_text(
        "name\tvolume\tregions\tlabels\taligned\tvoxel_size_nm\n"
        "A\tv\tr\tl\tmaybe\t50;10;10\n"
        "B\tv\tr\tl\tperhaps\t0\n"
        "A\tv\t\tl\t\t\n"
        "C d\t\t\t\t\t\n"
        "E\t\t\t\t\t\n"
    )
    error = error_of(read_sheet, str(sheet))
    assert isinstance(error, InputErrors)
    message = str(error)
    lines = message.splitlines()
    assert lines[0] == "9 problems in the inputs:" and len(lines) == 10
    assert all(line.startswith("- ") and "Fix: " in line for line in lines[1:])
    for expected in (
        "data set 'A', file '{s}': column 'aligned' holds maybe",
        "data set 'B', file '{s}': column 'aligned' holds perhaps",
        "data set 'A', file '{s}': column 'voxel_size_nm' holds '50;10;10'",
        "data set 'B', file '{s}': column 'voxel_size_nm' holds '0'",
        "file '{s}': line 5 has an empty 'volume'",
        "file '{s}': line 6 has an empty 'volume'",
        "file '{s}': data set names occur more than once: A.",
        "file '{s}': the name 'C d' cannot be used in file paths.",
        "data set 'A', file 'l': the sheet gives 'labels' but no 'regions'",
    ):
        assert expected.format(s=sheet) in message, message


def test_every_missing_file_is_reported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    imwrite(tmp_path / "v.tif", np.zeros((2, 4, 4), np.uint8))
    (tmp_path / "s.tsv").write_text(
        "name\tvolume\tregions\tlabels\ttruth\n"
        "A\tgone.tif\tr.csv\tv.tif\t\n"
        "B\tv.tif\t\t\tgone/slice_*.tif\n"
        "C\tresults/C/volume.tif\t\t\t\n"  # made by a rule
    )
    error = error_of(read_sheet_and_check, "s.tsv")
    assert [(e.dataset, e.file) for e in error.errors] == [
        ("A", "gone.tif"),
        ("A", "r.csv"),
        ("B", "gone/slice_*.tif"),
    ]


def read_sheet_and_check(path: str) -> None:
    check_external_inputs(read_sheet(path), path, generated_prefix="results/")


def test_a_comma_separated_tsv_is_told_to_be_tab_separated(tmp_path):
    sheet = tmp_path / "datasets.tsv"
    sheet.write_text("# my data\nname,volume,aligned\nA,v.tif,true\n")
    message = str(error_of(read_sheet, str(sheet)))
    assert message.startswith(
        f"file '{sheet}': the sheet must be tab-separated, but its header line "
        "'name,volume,aligned' holds commas and no tab."
    )
    assert "name the sheet .csv" in message and "was unexpected" not in message


def test_a_csv_sheet_is_read_with_quoted_voxel_sizes(tmp_path):
    sheet = tmp_path / "datasets.csv"
    sheet.write_text('name,volume,aligned,voxel_size_nm\nA,v.tif,true,"50,10,10"\nB,w.tif,,\n')
    frame = read_sheet(str(sheet))
    assert frame["name"].tolist() == ["A", "B"]
    assert frame["aligned"].tolist() == [True, False]
    assert frame["voxel_size_nm"].tolist() == ["50,10,10", None]
    sheet.write_text("name,volume,voxel_size_nm\nA,v.tif,50,10,10\nB,w.tif\nC,x.tif,5,5\n")
    error = error_of(read_sheet, str(sheet))  # unquoted voxel sizes; B's short line is fine
    assert [e.problem for e in error.errors] == [
        "line 2 has 5 cells, the header line 3.",
        "line 4 has 4 cells, the header line 3.",
    ]
    assert 'quote cells that hold commas ("50,10,10")' in str(error)
    sheet.write_text("name,volume,aligned\nA,v.tif,,,\nB,w.tif\n")  # empty extra cells
    assert read_sheet(str(sheet))["aligned"].tolist() == [False, False]


def test_unknown_columns_are_named_once_and_the_rows_still_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("s.tsv").write_text("name\tvolume\tnote\nA\ta.tif\tx\nB\tb.tif\ty\n")
    error = error_of(load_sheet, "s.tsv", SHEET_SCHEMA, "results/")
    assert isinstance(error, InputErrors) and len(error.errors) == 3
    assert error.errors[0].problem.startswith("the sheet has unknown column(s) note; the known")
    assert [e.dataset for e in error.errors[1:]] == ["A", "B"]  # a.tif and b.tif are missing
    Path("s.tsv").write_text("name\tvolumes\nA\ta.tif\n")
    message = str(error_of(load_sheet, "s.tsv", SHEET_SCHEMA, "results/"))
    assert "unknown column(s) volumes" in message
    assert "lacks the required column(s) volume" in message


def test_every_row_that_breaks_the_schema_is_reported(tmp_path):
    schema = tmp_path / "strict.schema.yaml"
    strict = (
        Path(SHEET_SCHEMA)
        .read_text()
        .replace("name: {type: string,", 'name: {type: string, pattern: "^[a-z]+$",')
    )
    assert strict != Path(SHEET_SCHEMA).read_text()
    schema.write_text(strict)
    (tmp_path / "s.tsv").write_text("name\tvolume\nok\tv.tif\nBAD\tv.tif\nWORSE\tv.tif\n")
    faults = Faults()
    sheet = validate_sheet(
        parse_sheet(str(tmp_path / "s.tsv"), faults), str(schema), "s.tsv", faults
    )
    assert [e.dataset for e in faults.errors] == ["BAD", "WORSE"]
    assert "the row does not match the sheet's schema: 'BAD' does not match" in str(
        faults.errors[0]
    )
    assert sheet["aligned"].tolist()[0] is False  # the good row's defaults are filled


# --- fibseg check ------------------------------------------------------------------------------


def spoil_three_datasets(project: Path) -> None:
    """Beside the good EXT: a missing volume, a bad voxel_size_nm cell and a 2-D volume."""
    imwrite(project / "data/flat.tif", np.zeros((48, 48), np.uint16))
    (project / SHEET).write_text(
        HEADER
        + GOOD
        + "GONE\tdata/missing.tif\t\t\t\n"
        + "BADVOX\tdata/vol.tif\t\t\t50;10\n"
        + "FLAT\tdata/flat.tif\t\t\t\n"
    )


def test_check_reports_the_faults_of_every_data_set_in_one_run(project, capsys):
    spoil_three_datasets(project)
    code, output = run(capsys, "check", SHEET)
    assert code == 2 and "Traceback" not in output
    assert "fibseg check: error: 3 problems in the inputs:\n" in output
    for line in (
        "- data set 'GONE', file 'data/missing.tif': the 'volume' file does not exist",
        "- data set 'BADVOX', file 'config/datasets.tsv': column 'voxel_size_nm' holds '50;10'",
        "- data set 'FLAT', file 'data/flat.tif': is 2-D with shape (48, 48)",
    ):
        assert f"\n{line}" in output, output
    assert "EXT: {'dataset': 'EXT'" in output  # the good one's summary is still logged


def test_check_reports_a_half_annotated_row_beside_a_bad_volume(project, capsys):
    imwrite(project / "data/labels.tif", np.full((5, 12, 12), 7, np.uint8))
    (project / SHEET).write_text(HEADER + GOOD + "HALF\tdata/vol.tif\tdata/regions.csv\t\t\n")
    code, output = run(capsys, "check", SHEET)
    assert code == 2 and "2 problems in the inputs:" in output
    assert "data set 'HALF'" in output and "gives 'regions' but no 'labels'" in output
    assert "data set 'EXT', file 'data/labels.tif'" in output


def test_check_tells_a_comma_separated_sheet_to_be_tab_separated(project, capsys):
    (project / SHEET).write_text("name,volume,regions,labels\nEXT,data/vol.tif,,\n")
    code, output = run(capsys, "check", SHEET)
    assert code == 2
    assert f"file '{SHEET}': the sheet must be tab-separated" in output


def test_check_reads_a_csv_sheet(project, capsys):
    (project / "config/datasets.csv").write_text(
        "name,volume,regions,labels,voxel_size_nm\nEXT,data/vol.tif,data/regions.csv,"
        'data/labels.tif,"40,8,8"\n'
    )
    code, output = run(capsys, "check", "config/datasets.csv")
    assert code == 0, output
    assert "1 data set(s) checked" in output and "'voxel_size_nm': [40.0, 8.0, 8.0]" in output


# --- the workflow at load ----------------------------------------------------------------------


@pytest.mark.workflow
def test_dry_run_lists_every_bad_data_set(external):
    (external / SHEET).write_text(
        HEADER + GOOD + "GONE\tdata/missing.tif\t\t\t\n" + "BADVOX\tdata/vol.tif\t\t\t5;5\n"
    )
    process = run_snakemake(external, "-n", check=False, timeout=600)
    output = process.stdout + process.stderr
    assert process.returncode != 0
    assert "2 problems in the inputs:" in output, output[-3000:]
    assert "- data set 'GONE', file 'data/missing.tif': the 'volume' file does not exist" in output
    assert "- data set 'BADVOX', file 'config/datasets.tsv': column 'voxel_size_nm'" in output


def test_fibseg_check_on_a_sheet_without_its_volume_column(tmp_path, monkeypatch, capsys):
    """A misspelt required column is named once; no row is then checked against a made-up
    volume path."""
    monkeypatch.chdir(tmp_path)
    Path("s.tsv").write_text("name\tvolum\nA\ta.tif\n")
    Path("run.yaml").write_text("voxel_size_nm: [50, 10, 10]\n")
    code, output = run(capsys, "check", "s.tsv", "--config", "run.yaml")
    assert code == 2
    assert "lacks the required column(s) volume" in output
    assert "MISSING" not in output and "the volume file does not exist" not in output
