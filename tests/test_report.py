"""The report's methods text (workflow/report/workflow.rst) is written from the run's settings:
rendered with Jinja as Snakemake's report does, for the default demo and the paper's config."""

from __future__ import annotations

from types import SimpleNamespace

import jinja2
import pandas as pd
import pytest
import yaml
from helpers import REPO
from snakemake.utils import update_config, validate

from fibseg.evaluation.figures import alignment_panel
from fibseg.preprocess.alignment import transforms_table
from fibseg.preprocess.registration import estimate_alignment
from fibseg.runtime.settings import AlignSettings

SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


def merged(*overlays: str, extra: dict | None = None) -> dict:
    """config/config.yaml with the overlays merged key by key, defaults filled."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for overlay in overlays:
        update_config(config, yaml.safe_load((REPO / "config" / overlay).read_text()))
    update_config(config, extra or {})
    validate(config, SCHEMA)
    return config


def methods_text(config: dict) -> str:
    template = jinja2.Template((REPO / "workflow/report/workflow.rst").read_text())
    return " ".join(template.render(snakemake=SimpleNamespace(config=config)).split())


def test_the_demo_report_names_the_joint_alignment_and_the_unet():
    text = methods_text(merged("demo.yaml"))
    assert "joint solve" in text and "StackReg" not in text
    assert "U-Net" in text and "patch CNN" not in text
    assert "engine" not in text and "padding" not in text  # keys the U-Net does not use
    assert "12 epochs of 25 steps of 16 tiles" in text
    assert "random forest" in text


def test_the_paper_report_names_stackreg_and_the_patch_cnn():
    text = methods_text(merged("paper.yaml"))
    assert "StackReg (rigid model)" in text and "joint solve" not in text
    assert "patch CNN" in text and "U-Net" not in text
    assert "sliding engine" in text and "same padding" in text


def test_a_pretrained_run_says_nothing_is_trained():
    text = methods_text(merged("demo.yaml", extra={"pretrained": {"bundle": "my_model"}}))
    assert "no model is trained in this run" in text and "my_model" in text
    assert "Training" not in text and "Tables 2-3" not in text


def test_without_the_forest_the_report_does_not_name_it():
    text = methods_text(merged("demo.yaml", extra={"forest": {"enabled": False}}))
    assert "random forest" not in text


@pytest.mark.parametrize("drift", [False, True])
def test_alignment_figure_from_a_real_alignment(tmp_path, drift):
    """The alignment panel draws from rule align's table: a still stack and a drifting one."""
    rng = __import__("numpy").random.default_rng(0)
    from scipy.ndimage import gaussian_filter, shift

    base = gaussian_filter(rng.normal(size=(96, 96)), 2)
    stack = [shift(base, (0.0, 0.6 * z if drift else 0.0), mode="wrap") for z in range(8)]
    stack = __import__("numpy").stack(stack) + rng.normal(0, 0.02, (8, 96, 96))
    alignment = estimate_alignment(stack.astype("float32"), AlignSettings())
    table = transforms_table(alignment.transforms).merge(alignment.slices, on="z")
    summary = {"dataset": "D", "method": "joint", "statement": alignment.statement}
    path = tmp_path / "alignment_D.png"
    alignment_panel(table, summary, str(path))
    assert path.stat().st_size > 1000
    assert alignment.drift_detected is drift


def test_alignment_figure_of_the_papers_chain(tmp_path):
    """method previous has no positions or drift test: the corrected shifts alone."""
    table = pd.DataFrame({"z": range(4), "tx": [0, 1.0, 2.0, 3.0], "ty": 0.0, "angle_deg": 0.0})
    path = tmp_path / "alignment.png"
    alignment_panel(table, {"dataset": "D", "method": "previous", "statement": "x"}, str(path))
    assert path.is_file()
