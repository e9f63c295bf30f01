"""Shared fixtures. The helpers that tests import by name live in helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY_DEMO, demo_sheet_rows, write_external_project, write_project


@pytest.fixture
def tiny_demo(tmp_path: Path) -> Path:
    """Two tiny demo data sets (6 slices of 96 x 96) in a fresh working directory."""
    return write_project(
        tmp_path,
        {"datasets": "config/datasets.tsv", "demo": TINY_DEMO},
        demo_sheet_rows(list(TINY_DEMO)),
    )


@pytest.fixture
def external(tmp_path: Path) -> Path:
    """A valid external data set 'EXT' (4 slices of 48 x 48) and a small grid."""
    return write_external_project(tmp_path)
