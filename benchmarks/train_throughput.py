"""Training throughput: the real input pipeline (patches cut on the fly from the region
crops, augmented, fed by a Keras PyDataset) against `model.fit` on the same patches already in
memory, measured in the same run. The ratio should be >= 0.9: the pipeline must not starve
the model.

    python benchmarks/train_throughput.py            # 113x3 and 33x1
    python benchmarks/train_throughput.py --quick    # fewer batches
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pandas as pd

from fibseg.model import build_model
from fibseg.patches import PatchSource, make_sequence
from fibseg.regions import RegionSet

BATCH = 128


def synthetic_source(
    n_regions: int, size: int, margin_xy: int, margin_z: int, samples: int
) -> PatchSource:
    rng = np.random.default_rng(0)
    side = size + 2 * margin_xy
    crops = rng.random((n_regions, 2 * margin_z + 1, side, side), dtype=np.float32)
    table = pd.DataFrame({"z": range(n_regions), "y": 0, "x": 0, "height": size, "width": size})
    labels = (rng.random((n_regions, size, size)) < 0.5).astype(np.uint8)
    regions = RegionSet("B", crops, labels, table, margin_xy, margin_z)
    picks = pd.DataFrame(
        {
            "dataset": "B",
            "region": rng.integers(0, n_regions, samples),
            "z": 0,
            "y": rng.integers(0, size, samples),
            "x": rng.integers(0, size, samples),
            "label": rng.integers(0, 2, samples),
        }
    )
    picks["z"] = picks["region"]
    return PatchSource({"B": regions}, picks)


def measure(n_xy: int, n_z: int, batches: int) -> dict[str, float]:
    samples = batches * BATCH
    source = synthetic_source(40, 96, 56, 5, samples)
    augment = {"a": 0.05, "b": 0.05, "probability": 0.5}
    sequence = make_sequence(source, n_xy, n_z, BATCH, seed=0, augment=augment, shuffle=True)
    in_memory = source.cut(np.arange(samples), n_xy, n_z)
    labels = source.labels

    def compiled():
        model = build_model(n_xy, n_z, "same", 0.3, 0.2, 1e-6, seed=0)
        model.compile(
            keras.optimizers.SGD(0.01, momentum=0.99), "binary_crossentropy", metrics=["accuracy"]
        )
        return model

    results = {}
    for name, fit in (
        ("pipeline", lambda m: m.fit(sequence, epochs=1, verbose=0)),
        (
            "in_memory",
            lambda m: m.fit(in_memory, labels, batch_size=BATCH, epochs=1, verbose=0, shuffle=True),
        ),
    ):
        model = compiled()
        fit(model)  # warm-up: tracing and compilation
        start = time.perf_counter()
        fit(model)
        results[name] = samples / (time.perf_counter() - start)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches")
    args = parser.parse_args()
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, {os.cpu_count()} CPUs")
    print(f"{'cell':>8} {'pipeline samples/s':>20} {'in-memory samples/s':>20} {'ratio':>7}")
    for n_xy, n_z, batches in ((113, 3, 8), (33, 1, 60)):
        batches = max(4, batches // 4) if args.quick else batches
        result = measure(n_xy, n_z, batches)
        ratio = result["pipeline"] / result["in_memory"]
        print(
            f"{n_xy:>4}x{n_z:<3} {result['pipeline']:>20.0f} {result['in_memory']:>20.0f} "
            f"{ratio:>7.2f}"
        )


if __name__ == "__main__":
    main()
