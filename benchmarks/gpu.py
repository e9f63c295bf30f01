"""The default U-Net (n_z 3, random weights) on whatever device the Keras backend finds:
training steps per second (batches of `--tiles` tiles of 96 x 96 with their labels and
voxel weights, Adam, the labelled-voxel loss of fibseg's U-Net training) and inference voxels
per second on one full 2247 x 3372 slice through fibseg's exact tiled engine. Runs with the
TensorFlow, JAX or torch backend (a GPU machine may lack TensorFlow), and names the device.

    KERAS_BACKEND=jax python benchmarks/gpu.py
    KERAS_BACKEND=torch python benchmarks/gpu.py
    python benchmarks/gpu.py --steps 3 --slice 512,512     # a quick check on a CPU
    python benchmarks/gpu.py --policy mixed_bfloat16        # bfloat16 compute (Keras policy)

With `--policy mixed_bfloat16` (or `mixed_float16` on a GPU) the network computes in half
precision; the inference line then also gives the largest difference of its scores from
float32's on the slice and the share of voxels on the other side of 0.5.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from fibseg.inference.unet_engine import UnetEngine
from fibseg.networks.unet import build_unet
from fibseg.training.dense import dense_loss, dense_metrics

N_Z, SIDE = 3, 96


def device_name() -> str:
    """The accelerator the backend uses, or the CPU."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return str(jax.devices()[0].device_kind)
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "cpu"
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")


def training_rate(tiles: int, steps: int) -> float:
    """Training steps per second after two warm-up steps."""
    model = build_unet(N_Z, seed=0)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=dense_loss(), weighted_metrics=dense_metrics()
    )
    rng = np.random.default_rng(0)
    inputs = rng.random((tiles, SIDE, SIDE, N_Z), dtype=np.float32)
    labels = (rng.random((tiles, SIDE, SIDE, 1)) < 0.6).astype(np.float32)
    weights = (rng.random((tiles, SIDE, SIDE)) < 0.3).astype(np.float32)  # labelled voxels
    for _ in range(2):
        model.train_on_batch(inputs, labels, sample_weight=weights)
    start = time.perf_counter()
    for _ in range(steps):
        loss = model.train_on_batch(inputs, labels, sample_weight=weights)
    np.asarray(loss)  # waits for the device
    return steps / (time.perf_counter() - start)


def inference_rate(
    shape: tuple[int, int], tile: int
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Seconds and voxels per second of one whole slice of `shape` (after a warm-up tile),
    its scores, and the input slice stack."""
    engine = UnetEngine(build_unet(N_Z, seed=0), tile=tile)
    stack = np.random.default_rng(0).random((N_Z, *shape), dtype=np.float32)
    engine.scores(stack[:, : min(tile, shape[0]), : min(tile, shape[1])])
    start = time.perf_counter()
    scores = np.asarray(engine.scores(stack), dtype=np.float32)
    seconds = time.perf_counter() - start
    return seconds, shape[0] * shape[1] / seconds, scores, stack


def float32_scores(stack: np.ndarray, tile: int) -> np.ndarray:
    """The same network's scores of `stack` in float32 (the policy set back afterwards)."""
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        return np.asarray(UnetEngine(build_unet(N_Z, seed=0), tile=tile).scores(stack))
    finally:
        keras.mixed_precision.set_global_policy(policy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=16, help="tiles per training step")
    parser.add_argument("--steps", type=int, default=50, help="timed training steps")
    parser.add_argument("--slice", default="2247,3372", help="height,width of the slice")
    parser.add_argument("--tile", type=int, default=1024, help="the engine's output tile side")
    parser.add_argument("--policy", default="float32", help="Keras dtype policy")
    args = parser.parse_args()
    keras.mixed_precision.set_global_policy(args.policy)
    shape = tuple(int(side) for side in args.slice.split(","))
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}, device "
        f"{device_name()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
        f"policy {args.policy}"
    )
    steps = training_rate(args.tiles, args.steps)
    print(
        f"U-Net training : {steps:8.2f} steps/s ({args.tiles} tiles of {SIDE} x {SIDE} x {N_Z}"
        f" a step; {steps * args.tiles * SIDE * SIDE:,.0f} voxels/s)"
    )
    seconds, rate, scores, stack = inference_rate(shape, args.tile)
    print(
        f"U-Net inference: {rate:12,.0f} voxels/s, one {shape[0]} x {shape[1]} slice in "
        f"{seconds:.2f} s (tile {args.tile}); 200 slices in {200 * seconds / 60:.1f} min"
    )
    if args.policy != "float32":
        exact = float32_scores(stack, args.tile)
        flipped = np.mean((scores > 0.5) != (exact > 0.5))
        print(
            f"against float32: scores differ by up to {np.abs(scores - exact).max():.4f}; "
            f"{100 * flipped:.2f} % of the voxels on the other side of 0.5"
        )


if __name__ == "__main__":
    main()
