"""Helpers for the thin scripts in scripts/: logging and the run's provenance."""

from __future__ import annotations

import logging
import platform
import sys


def start_log(log_path: str, name: str = "fibseg") -> logging.Logger:
    """Send warnings, errors and this job's log lines to the rule's log file."""
    logging.basicConfig(
        filename=log_path,
        level=logging.INFO,
        force=True,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    logging.captureWarnings(True)
    sys.stderr = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the job
    logger = logging.getLogger(name)
    logger.info("python %s on %s", platform.python_version(), platform.node())
    return logger
