"""Training throughput, two comparisons measured in the same run:

1. the patch input pipeline (patches cut on the fly from the region crops, augmented, fed by
   a Keras PyDataset) against `model.fit` on the same patches already in memory (113x3, 33x1);
   the ratio should be >= 0.9: the pipeline must not starve the model;
2. dense training (`training.mode: dense`: region tiles through the weight-sharing twin)
   against the patch path, in labelled voxels trained per second, for 'valid' models at 81x3
   and 113x3 and regions of 48 x 48 (the demo's) and 96 x 96 px.

    python benchmarks/train_throughput.py            # both
    python benchmarks/train_throughput.py --quick    # fewer batches
    python benchmarks/train_throughput.py --dense-only
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pandas as pd

from fibseg.annotation.regions import RegionSet
from fibseg.networks.model import build_model
from fibseg.training.patches import PatchSource, make_sequence

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


def regions_for(n_xy: int, n_z: int, size: int, count: int) -> RegionSet:
    """`count` regions of size x size with the context a 'valid' n_xy x n_xy x n_z model needs."""
    rng = np.random.default_rng(1)
    margin = n_xy // 2
    crops = rng.random((count, n_z, size + 2 * margin, size + 2 * margin), dtype=np.float32)
    labels = (rng.random((count, size, size)) < 0.5).astype(np.uint8)
    table = pd.DataFrame({"z": range(count), "y": 0, "x": 0, "height": size, "width": size})
    return RegionSet("B", crops, labels, table, margin, n_z // 2)


def dense_against_patches(n_xy: int, n_z: int, size: int, tiles: int, batches: int) -> dict:
    """Labelled voxels trained per second: dense tiles against sampled patches (batch 128)."""
    from fibseg.training.dense import compile_training_twin
    from fibseg.training.tiles import DenseTiles

    augment = {"a": 0.05, "b": 0.05, "probability": 0.5}
    regions = regions_for(n_xy, n_z, size, tiles * batches)
    selection = {"B": list(range(tiles * batches))}

    def model():
        built = build_model(n_xy, n_z, "valid", 0.3, 0.2, 1e-6, seed=0)
        built.compile(keras.optimizers.SGD(0.01, momentum=0.99), "binary_crossentropy")
        return built

    dense = DenseTiles({"B": regions}, selection, n_xy, n_z, tiles, 0, augment, shuffle=True)
    twin = compile_training_twin(model())
    twin.fit(dense, epochs=1, verbose=0)  # warm-up: tracing and compilation
    start = time.perf_counter()
    twin.fit(dense, epochs=1, verbose=0)
    dense_rate = dense.labelled / (time.perf_counter() - start)

    rng = np.random.default_rng(2)
    samples = pd.DataFrame(
        {
            "dataset": "B",
            "region": rng.integers(0, len(regions.table), 8 * BATCH),
            "y": rng.integers(0, size, 8 * BATCH),
            "x": rng.integers(0, size, 8 * BATCH),
            "label": rng.integers(0, 2, 8 * BATCH),
        }
    )
    samples["z"] = samples["region"]
    source = PatchSource({"B": regions}, samples)
    sequence = make_sequence(source, n_xy, n_z, BATCH, seed=0, augment=augment, shuffle=True)
    patch_model = model()
    patch_model.fit(sequence, epochs=1, verbose=0)
    start = time.perf_counter()
    patch_model.fit(sequence, epochs=1, verbose=0)
    patch_rate = len(source) / (time.perf_counter() - start)
    return {"dense": dense_rate, "patches": patch_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches")
    parser.add_argument("--dense-only", action="store_true", help="only the dense comparison")
    parser.add_argument("--tiles-per-batch", type=int, default=4, help="dense tiles per step")
    args = parser.parse_args()
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, {os.cpu_count()} CPUs")
    print("dense training against patches, labelled voxels trained per second")
    print(f"{'cell':>8} {'region':>7} {'dense':>12} {'patches':>10} {'ratio':>7}")
    for n_xy, n_z in ((81, 3), (113, 3)):
        for size in (48, 96):
            batches = 2 if args.quick else 4
            rates = dense_against_patches(n_xy, n_z, size, args.tiles_per_batch, batches)
            print(
                f"{n_xy:>4}x{n_z:<3} {size:>5}px {rates['dense']:>12.0f} "
                f"{rates['patches']:>10.0f} {rates['dense'] / rates['patches']:>7.1f}"
            )
    if args.dense_only:
        return
    print("patch pipeline against in-memory patches, samples per second")
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
