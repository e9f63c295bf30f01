"""Building the DAG stays light: no TensorFlow, Keras, scipy.stats, scikit-image or
scikit-learn is imported when Snakemake only plans the run."""

import re
import subprocess
import sys

from helpers import REPO

HEAVY = ("tensorflow", "keras", "scipy.stats", "skimage", "sklearn", "matplotlib")


def test_dry_run_imports_no_heavy_module():
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    imported = set(re.findall(r"^import time:.*\|\s+(\S+)$", run.stderr, re.M))
    assert "fibseg.pipeline.dag" in imported  # the Snakefile's helpers were loaded
    heavy = sorted(m for m in imported if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert not heavy, f"building the DAG imported {heavy}"
