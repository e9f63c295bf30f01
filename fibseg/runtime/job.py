"""The runtime of one Snakemake job: its log, its CPU threads and its provenance."""

from __future__ import annotations

import atexit
import logging
import platform
import resource
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def start_log(log_path: str, name: str = "fibseg") -> logging.Logger:
    """Send warnings, errors and this job's log lines to the rule's log file."""
    logging.basicConfig(
        filename=log_path,
        level=logging.INFO,
        force=True,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    logging.captureWarnings(True)
    sys.stderr = open(log_path, "a", buffering=1)
    logger = logging.getLogger(name)
    logger.info("python %s on %s", platform.python_version(), platform.node())
    if not getattr(start_log, "reports_peak", False):  # once per process
        atexit.register(lambda: logging.getLogger(name).info(PEAK_LINE, peak_rss_mb()))
        start_log.reports_peak = True
    return logger


# The last line of every job's log: its process's peak memory, exact where Snakemake's
# benchmark files sample it (every few seconds); benchmarks/scale.py reads it.
PEAK_LINE = "peak RSS of this job: %.0f MB"


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB): VmHWM, which starts afresh at exec, where
    ru_maxrss would carry a forking parent's peak over."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def configure_threads(threads: int) -> None:
    """Limit the backend's CPU threads to what Snakemake granted the job, and make its ops
    deterministic: the same seed then gives the same weights on the same machine."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        tf.config.experimental.enable_op_determinism()


def versions() -> dict[str, str]:
    """Versions of the software that trained or ran a model."""
    import keras

    found = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "numpy": np.__version__,
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        found["tensorflow"] = tf.__version__
    return found


def package_versions() -> dict[str, str]:
    """Installed versions of fibseg, Keras and TensorFlow, from the package metadata (nothing
    is imported); 'not installed' where a package is missing."""
    from importlib import metadata

    found = {}
    for name, distributions in (
        ("fibseg", ("fibseg",)),
        ("keras", ("keras",)),
        ("tensorflow", ("tensorflow", "tensorflow-cpu")),
    ):
        for distribution in distributions:
            try:
                found[name] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                found[name] = "not installed"
    return found


def computed_in_order(
    function: Callable[[np.ndarray], T], planes: Iterable[np.ndarray], threads: int
) -> Iterator[T]:
    """`function` of each plane, in order, `threads` planes at a time on a thread pool (scipy's
    filters and transforms release the GIL); at most `threads` planes are held at once."""
    planes = iter(planes)
    with ThreadPoolExecutor(max(threads, 1)) as pool:
        while block := list(islice(planes, max(threads, 1))):
            yield from pool.map(function, block)
