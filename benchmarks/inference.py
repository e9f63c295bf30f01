"""Inference throughput at n_xy=113, n_z=3 ('valid' model, random weights, synthetic data):

- voxels/s of the sliding window and of the dense engine, and their ratio;
- the dense engine's achieved GFLOP/s against this machine's fp32 matmul GFLOP/s, both
  measured in this run with the same Keras backend;
- time and peak RSS for one full 2247 x 3372 slice with the dense engine (in a child process,
  so the peak is its own);
- the same for the U-Net (model.architecture: unet, n_z=3, random weights): voxels/s, FLOPs
  per voxel and the full slice, beside the dense engine's;
- what rule predict_slices does with that U-Net (fibseg.inference.ensemble.score_chunk: load
  the saved `.keras`, read `--rule-slices` full slices from a compressed preprocessed.h5,
  score them, write the score chunk), per slice and against the engine's full slice.

    python benchmarks/inference.py [--tile 1024] [--skip-full-slice] [--rule-slices 4]
    KERAS_BACKEND=jax python benchmarks/inference.py --sliding-side 256 --batch 8192  # a GPU
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from fibseg.runtime.job import peak_rss_mb

N_XY, N_Z = 113, 3
FULL_SLICE = (2247, 3372)


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """fp32 matmul rate of the Keras backend (the engine's own BLAS)."""
    import keras
    from keras import ops

    a = ops.convert_to_tensor(np.random.default_rng(0).random((size, size), np.float32))
    b = ops.convert_to_tensor(np.random.default_rng(1).random((size, size), np.float32))
    keras.ops.convert_to_numpy(ops.matmul(a, b))  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        result = ops.matmul(a, b)
    keras.ops.convert_to_numpy(result)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def twin_flops(twin, height: int, width: int) -> float:
    """2 x multiply-adds of every convolution of one dense-twin call on (height, width)."""
    total = 0.0
    shape = (1, height, width, twin.input_shape[-1])
    for layer in twin.layers[1:]:  # in call order; the first is the input
        out = layer.compute_output_shape(shape)
        if type(layer).__name__ == "Conv2D":
            k_h, k_w = layer.kernel_size
            total += 2 * float(np.prod(out)) * k_h * k_w * shape[-1]
        shape = out
    return total


def patch_flops(net) -> float:
    """2 x multiply-adds of the patch model for one voxel (one neighbourhood)."""
    total = 0.0
    for layer in net.layers:
        if type(layer).__name__ == "Conv2D":
            _, out_h, out_w, out_c = layer.output.shape
            total += 2 * out_h * out_w * out_c * 9 * layer.input.shape[-1]
        elif type(layer).__name__ == "Dense":
            total += 2 * layer.input.shape[-1] * layer.units
    return total


def model():
    import keras

    from fibseg.networks.model import build_model

    keras.utils.set_random_seed(0)
    return build_model(N_XY, N_Z, "valid", seed=0)


def full_slice(tile: int) -> None:
    """Child process: one full slice with the dense engine; prints seconds and peak RSS."""
    from fibseg.inference.dense_engine import DenseEngine
    from fibseg.networks.twin import tile_sides

    engine = DenseEngine(model(), tile=tile)
    stack = np.random.default_rng(0).random((N_Z, *FULL_SLICE), dtype=np.float32)
    (_, tile_h), (_, tile_w) = (tile_sides(side, tile) for side in FULL_SLICE)
    engine.scores(stack[:, :tile_h, :tile_w])  # warm-up: trace once for this tile shape
    start = time.perf_counter()
    scores = engine.scores(stack)
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    print(f"FULL {seconds:.2f} {peak_mb:.0f} {scores.shape[0]}x{scores.shape[1]}")


def unet_full_slice(tile: int) -> None:
    """Child process: one full slice with the U-Net (fibseg.inference.unet_engine)."""
    from fibseg.inference.unet_engine import UnetEngine
    from fibseg.networks.unet import build_unet

    engine = UnetEngine(build_unet(N_Z, seed=0), tile=tile)
    stack = np.random.default_rng(0).random((N_Z, *FULL_SLICE), dtype=np.float32)
    engine.scores(stack[:, :tile, :tile])  # warm-up
    start = time.perf_counter()
    scores = engine.scores(stack)
    seconds = time.perf_counter() - start
    print(f"FULL {seconds:.2f} {peak_rss_mb():.0f} {scores.shape[0]}x{scores.shape[1]}")


def rule_path(tile: int, slices: int) -> None:
    """Child process: rule predict_slices on `slices` full slices of a compressed HDF5
    volume, with the U-Net of `unet_full_slice` saved as `.keras`; prints seconds per slice
    (the whole job: loading, reading, scoring, writing) and peak RSS."""
    import tempfile

    from fibseg.inference.ensemble import score_chunk
    from fibseg.io.writers import write_h5
    from fibseg.networks.unet import build_unet
    from fibseg.runtime.job import configure_threads
    from fibseg.runtime.settings import InferenceSettings

    configure_threads(os.cpu_count() or 1)  # as scripts/predict_slices.py does
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        build_unet(N_Z, seed=0).save(f"{folder}/model.keras")
        volume = rng.random((slices, *FULL_SLICE), dtype=np.float32)
        write_h5(f"{folder}/preprocessed.h5", {"volume": volume})
        del volume
        start = time.perf_counter()
        score_chunk(
            f"{folder}/preprocessed.h5",
            "bench",
            [f"{folder}/model.keras"],
            (0, slices),
            InferenceSettings(engine="dense", tile=tile),
            os.cpu_count() or 1,
            False,
            f"{folder}/chunk.h5",
        )
        seconds = (time.perf_counter() - start) / slices
    print(f"FULL {seconds:.2f} {peak_rss_mb():.0f} {FULL_SLICE[0]}x{FULL_SLICE[1]}")


def unet_flops_per_voxel(n_z: int, side: int = 512) -> float:
    """The U-Net's forward FLOPs per output voxel: 2 x the multiply-adds of each convolution
    at its level's resolution (a level l map has 1/4**l of the voxels)."""
    from fibseg.networks.unet import build_unet

    total = 0.0
    for layer in build_unet(n_z).layers:
        if type(layer).__name__ == "Conv2D":
            name = layer.name  # down1_conv1 .. down3, bottom, up3 .. up1, score
            digits = re.match(r"(?:down|up)(\d)", name)
            level = int(digits.group(1)) - 1 if digits else (3 if name == "bottom_conv1" else 0)
            level = 3 if name.startswith("bottom") else level
            k_h, k_w = layer.kernel_size
            macs = k_h * k_w * layer.input.shape[-1] * layer.filters
            total += 2 * macs / 4**level
    return total


def run_child(*arguments: str) -> tuple[float, float, str]:
    """Seconds, peak RSS (MB) and shape printed by a child process of this script."""
    child = subprocess.run(
        [sys.executable, __file__, *arguments], capture_output=True, text=True, check=True
    )
    line = next(x for x in child.stdout.splitlines() if x.startswith("FULL"))
    _, seconds, peak_mb, shape = line.split()
    return float(seconds), float(peak_mb), shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--skip-full-slice", action="store_true")
    parser.add_argument(
        "--sliding-side", type=int, default=48, help="side of the image the sliding window scores"
    )
    parser.add_argument("--batch", type=int, default=2048, help="sliding-window batch size")
    parser.add_argument("--child-full-slice", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-unet-slice", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--rule-slices", type=int, default=4, help="full slices of the predict_slices job"
    )
    parser.add_argument("--child-rule-path", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rule_path:
        rule_path(args.tile, args.rule_slices)
        return
    if args.child_full_slice:
        full_slice(args.tile)
        return
    if args.child_unet_slice:
        unet_full_slice(args.tile)
        return

    import keras

    from fibseg.inference.dense_engine import DenseEngine
    from fibseg.inference.sliding import sliding_scores

    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}, {os.cpu_count()} CPUs, "
        f"n_xy={N_XY}, n_z={N_Z}, valid padding"
    )
    net = model()
    rng = np.random.default_rng(0)

    small = rng.random((N_Z, args.sliding_side, args.sliding_side), dtype=np.float32)
    sliding_scores(net, small[:, :8, :8], args.batch, args.batch)  # warm-up
    start = time.perf_counter()
    sliding = sliding_scores(net, small, args.batch, args.batch)
    sliding_rate = small[0].size / (time.perf_counter() - start)

    engine = DenseEngine(net, tile=args.tile)
    image = rng.random((N_Z, args.tile, args.tile), dtype=np.float32)
    engine.scores(image)  # warm-up
    repeats = 3
    start = time.perf_counter()
    for _ in range(repeats):
        engine.scores(image)
    dense_seconds = (time.perf_counter() - start) / repeats
    dense_rate = image[0].size / dense_seconds
    span = args.tile + engine.field - 1
    gflops = twin_flops(engine.twin, span, span) / dense_seconds / 1e9
    peak = matmul_gflops()
    check = np.abs(engine.scores(small) - sliding).max()

    print(f"sliding window : {sliding_rate:12,.0f} voxels/s")
    print(f"dense engine   : {dense_rate:12,.0f} voxels/s   (tile {args.tile})")
    print(f"ratio          : {dense_rate / sliding_rate:12,.0f} x")
    print(
        f"dense          : {gflops:12.1f} GFLOP/s = {100 * gflops / peak:.0f} % of the "
        f"fp32 matmul rate {peak:.1f} GFLOP/s measured now"
    )
    print(f"max |dense - sliding| on {args.sliding_side} x {args.sliding_side}: {check:.2e}")
    print(
        f"FLOP per voxel : {twin_flops(engine.twin, span, span) / args.tile**2 / 1e6:.2f} M "
        f"(dense, halo included) vs {patch_flops(net) / 1e6:.0f} M (one patch)"
    )
    unet_rate = unet_tile_rate(args.tile)
    print(f"U-Net          : {unet_rate:12,.0f} voxels/s   (tile {args.tile}, n_z {N_Z})")
    print(
        f"U-Net FLOP/voxel: {unet_flops_per_voxel(N_Z) / 1e3:11.0f} k (halo left out) vs "
        f"{twin_flops(engine.twin, span, span) / args.tile**2 / 1e3:.0f} k (dense engine)"
    )
    if not args.skip_full_slice:
        seconds, peak_mb, shape = run_child("--child-full-slice", "--tile", str(args.tile))
        print(
            f"full slice     : {shape} in {seconds:.1f} s, peak RSS "
            f"{peak_mb / 1024:.2f} GB (dense, tile {args.tile})"
        )
        unet_seconds, unet_mb, _ = run_child("--child-unet-slice", "--tile", str(args.tile))
        print(
            f"full slice     : {shape} in {unet_seconds:.1f} s, peak RSS "
            f"{unet_mb / 1024:.2f} GB (U-Net, tile {args.tile}); "
            f"{seconds / unet_seconds:.1f} x the dense engine's speed"
        )
        rule_seconds, rule_mb, _ = run_child(
            "--child-rule-path", "--tile", str(args.tile), "--rule-slices", str(args.rule_slices)
        )
        print(
            f"rule predict_slices: {rule_seconds:.1f} s per full slice over "
            f"{args.rule_slices} slices (loading, reading, scoring, writing), peak RSS "
            f"{rule_mb / 1024:.2f} GB; the job runs at {unet_seconds / rule_seconds:.2f} x "
            f"the engine's rate ({100 * (rule_seconds / unet_seconds - 1):+.0f} % time per slice)"
        )
        print(
            f"sliding, same slice (extrapolated): "
            f"{FULL_SLICE[0] * FULL_SLICE[1] / sliding_rate / 3600:.1f} h"
        )


def unet_tile_rate(tile: int) -> float:
    """Voxels/s of the U-Net engine on one tile x tile slice (halo included in the work)."""
    from fibseg.inference.unet_engine import UnetEngine
    from fibseg.networks.unet import build_unet

    engine = UnetEngine(build_unet(N_Z, seed=0), tile=tile)
    image = np.random.default_rng(0).random((N_Z, tile, tile), dtype=np.float32)
    engine.scores(image)  # warm-up
    start = time.perf_counter()
    for _ in range(3):
        engine.scores(image)
    return 3 * image[0].size / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
