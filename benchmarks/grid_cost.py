"""Training cost of a grid configuration: epochs, samples and floating-point operations
(counted from the models' layers, `forward_flops`), for the paper's grid, with
successive halving (config/halving.yaml), and with dense training where the grid allows it.

Counted, not estimated:
- forward FLOPs of each cell's network on one patch (patches) or one training tile (dense);
- epochs per cell from the grid plan (fibseg.training.halving.GridPlan);
- samples per epoch: the paper's 117,964 train and 39,320 validation samples (§3.3, 1 % of
  the labelled voxels); dense training sees every labelled voxel of the 180 train and 60
  validation regions of 256 x 256 px.
A training step costs 3 forward passes (forward, and a backward pass of about twice that);
validation costs one. Measured in the same run: the CPU's sustained FLOP/s for patch and dense
training steps on this machine, from which the CPU-hours follow. The GPU-hours are an
ESTIMATE at an assumed sustained throughput (--gpu-tflops), not a measurement.

    python benchmarks/grid_cost.py                 # about 2 minutes on 2 cores
    python benchmarks/grid_cost.py --gpu-tflops 10
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fibseg.networks.model import VALID_MIN_NXY, build_model  # noqa: E402
from fibseg.networks.twin import tile_sides, twin_geometry  # noqa: E402
from fibseg.training.dense import training_twin  # noqa: E402
from fibseg.training.halving import GridPlan  # noqa: E402
from fibseg.training.tiles import DEFAULT_TILE  # noqa: E402

PAPER_TRAIN_SAMPLES, PAPER_VAL_SAMPLES = 117_964, 39_320  # §3.3
PAPER_TRAIN_REGIONS, PAPER_VAL_REGIONS, REGION_SIDE = 180, 60, 256  # §3.3
BATCH = 128
TRAIN_STEP_PASSES = 3  # forward + backward (about 2 x forward)


@dataclass
class Configuration:
    name: str
    cells: list[tuple[int, int]]
    padding: str
    mode: str
    plan: GridPlan


def forward_flops(model, input_shape: tuple[int, ...]) -> int:
    """Floating-point operations of one forward pass of `model` on a batch of `input_shape`
    (batch first), counted from its layers: 2 x the multiply-adds of every layer with a
    kernel (convolutions and dense layers, also the dense layers that a training twin applies
    as convolutions). Pooling, activations and biases are left out (a few per cent).

    The shapes are traced through the model's graph, so fully convolutional models with
    free spatial sizes (fibseg.training.dense.training_twin) are counted at `input_shape`."""
    shapes = {id(model.inputs[0]): tuple(input_shape)}
    total = 0
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            operation = node.operation
            inputs = [keras.KerasTensor(shapes[id(t)]) for t in node.input_tensors]
            spec = operation.compute_output_spec(inputs[0] if len(inputs) == 1 else inputs)
            shapes[id(node.output_tensors[0])] = tuple(spec.shape)
            # the twin's DenseAsConv and ValidConv wrap a Dense or a convolution
            layer = getattr(operation, "dense", getattr(operation, "conv", operation))
            kernel = getattr(layer, "kernel", None)
            if kernel is not None:
                positions = math.prod(spec.shape[:-1])  # batch x output positions
                total += 2 * positions * math.prod(kernel.shape)
    return int(total)


def patch_flops(n_xy: int, n_z: int, padding: str) -> int:
    return forward_flops(build_model(n_xy, n_z, padding), (1, n_xy, n_xy, n_z))


def tile_flops(n_xy: int, n_z: int) -> tuple[int, int]:
    """(forward FLOPs of one dense training tile, its output voxels)."""
    field, _ = twin_geometry(n_xy, "valid")
    _, side = tile_sides(REGION_SIDE, DEFAULT_TILE)
    twin = training_twin(build_model(n_xy, n_z, "valid"))
    return forward_flops(twin, (1, side + field - 1, side + field - 1, n_z)), side * side


def epoch_cost(n_xy: int, n_z: int, padding: str, mode: str) -> tuple[float, float]:
    """(FLOPs, train samples) of one epoch of one run: train steps and validation."""
    if mode == "patches":
        flops = patch_flops(n_xy, n_z, padding)
        cost = TRAIN_STEP_PASSES * flops * PAPER_TRAIN_SAMPLES + flops * PAPER_VAL_SAMPLES
        return cost, PAPER_TRAIN_SAMPLES
    flops, voxels = tile_flops(n_xy, n_z)
    tiles_per_region = tile_sides(REGION_SIDE, DEFAULT_TILE)[0] ** 2
    train_tiles = PAPER_TRAIN_REGIONS * tiles_per_region
    val_tiles = PAPER_VAL_REGIONS * tiles_per_region
    cost = TRAIN_STEP_PASSES * flops * train_tiles + flops * val_tiles
    return cost, PAPER_TRAIN_REGIONS * REGION_SIDE**2


def grid_cost(config: Configuration) -> dict[str, float]:
    flops = samples = 0.0
    for n_xy, n_z in config.cells:
        per_epoch, per_epoch_samples = epoch_cost(n_xy, n_z, config.padding, config.mode)
        epochs = config.plan.run_epochs()
        flops += epochs * per_epoch
        samples += epochs * per_epoch_samples
    return {
        "cells": len(config.cells),
        "runs": len(config.cells) * config.plan.seeds,
        "epochs": len(config.cells) * config.plan.run_epochs(),
        "samples": samples,
        "flops": flops,
    }


def measured_patch_rate(n_xy: int, n_z: int, batches: int) -> float:
    """Sustained FLOP/s of patch training steps (in-memory batches of 128) on this CPU."""
    rng = np.random.default_rng(0)
    patches = rng.random((batches * BATCH, n_xy, n_xy, n_z), dtype=np.float32)
    labels = rng.integers(0, 2, (batches * BATCH, 1)).astype(np.float32)
    model = build_model(n_xy, n_z, "same", 0.3, 0.2, 1e-6, seed=0)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.99), "binary_crossentropy")
    model.fit(patches[: 2 * BATCH], labels[: 2 * BATCH], batch_size=BATCH, verbose=0)
    start = time.perf_counter()
    model.fit(patches, labels, batch_size=BATCH, verbose=0)
    seconds = time.perf_counter() - start
    return TRAIN_STEP_PASSES * patch_flops(n_xy, n_z, "same") * len(patches) / seconds


def measured_dense_rate(n_xy: int, n_z: int, steps: int, tiles: int = 4) -> float:
    """Sustained FLOP/s of dense training steps (`tiles` tiles of 128 px) on this CPU."""
    from fibseg.training.dense import compile_training_twin

    field, _ = twin_geometry(n_xy, "valid")
    side = DEFAULT_TILE
    model = build_model(n_xy, n_z, "valid", 0.3, 0.2, 1e-6, seed=0)
    twin = compile_training_twin(model, keras.optimizers.SGD(0.01, momentum=0.99))
    rng = np.random.default_rng(0)
    inputs = rng.random((tiles, side + field - 1, side + field - 1, n_z), dtype=np.float32)
    output_shape = tuple(twin.compute_output_spec(keras.KerasTensor(inputs.shape)).shape)
    targets = rng.integers(0, 2, output_shape).astype(np.float32)
    weights = np.ones(output_shape[:-1], np.float32)  # every voxel labelled
    twin.train_on_batch(inputs, targets, sample_weight=weights)
    start = time.perf_counter()
    for _ in range(steps):
        twin.train_on_batch(inputs, targets, sample_weight=weights)
    seconds = time.perf_counter() - start
    per_step = TRAIN_STEP_PASSES * forward_flops(twin, inputs.shape)
    return per_step * steps / seconds


def unet_cost(paper: dict, halving: dict, rate: float) -> None:
    """One U-Net run of the demo (config/config.yaml with config/demo.yaml: every epoch run)
    and of config/config.yaml at its cap of epochs (steps x tiles of side n_xy, validation
    left out) beside one average run of the paper's grid, in FLOPs, with the U-Net's forward
    FLOPs per voxel; CPU-hours at the dense training rate measured above."""
    from fibseg.networks.unet import build_unet

    base = yaml.safe_load((REPO / "config/config.yaml").read_text())
    demo_training = yaml.safe_load((REPO / "config/demo.yaml").read_text())["training"]
    (side,), (n_z,) = base["grid"]["n_xy"], base["grid"]["n_z"]
    paper_grid = grid_cost(configurations(paper, halving)[0])
    paper_run = paper_grid["flops"] / paper_grid["runs"]
    unet = build_unet(n_z)
    for name, training in (
        ("the demo", base["training"] | demo_training),
        ("config/config.yaml at its cap", base["training"]),
    ):
        tiles, steps = training["tiles_per_batch"], training["epochs"] * training["steps_per_epoch"]
        run = TRAIN_STEP_PASSES * forward_flops(unet, (tiles, side, side, n_z)) * steps
        print(
            f"\nU-Net {side}x{n_z} ({name}): {steps} steps of {tiles} tiles = "
            f"{run / 1e15:.3f} PFLOP per run ({run / rate / 3600:.2f} CPU-h), against "
            f"{paper_run / 1e15:.3f} PFLOP for one average run of the paper's grid "
            f"(ratio {run / paper_run:.3f})"
        )
    per_voxel = forward_flops(unet, (1, 512, 512, n_z)) / 512**2
    print(f"U-Net forward: {per_voxel / 1e3:.0f} kFLOP per voxel")


def configurations(paper: dict, halving: dict) -> list[Configuration]:
    grid, epochs = paper["grid"], paper["training"]["epochs"]
    cells = [(n_xy, n_z) for n_z in grid["n_z"] for n_xy in grid["n_xy"]]
    valid_cells = [(n_xy, n_z) for n_xy, n_z in cells if n_xy >= VALID_MIN_NXY]
    full = GridPlan.from_config(grid, epochs)
    halved = GridPlan.from_config({**grid, **halving["grid"]}, epochs)
    return [
        Configuration("paper: patches, same, full grid", cells, "same", "patches", full),
        Configuration("paper + halving.yaml", cells, "same", "patches", halved),
        Configuration("n_xy >= 76, patches, valid, full", valid_cells, "valid", "patches", full),
        Configuration("n_xy >= 76, dense, full", valid_cells, "valid", "dense", full),
        Configuration("n_xy >= 76, dense + halving.yaml", valid_cells, "valid", "dense", halved),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", default=str(REPO / "config/paper.yaml"))
    parser.add_argument("--halving", default=str(REPO / "config/halving.yaml"))
    parser.add_argument(
        "--gpu-tflops",
        type=float,
        default=7.0,
        help="ASSUMED sustained fp32 TFLOP/s of one GPU (default 7: about half of a V100's "
        "15.7 peak)",
    )
    parser.add_argument("--batches", type=int, default=4, help="timed patch batches per cell")
    args = parser.parse_args()
    paper = yaml.safe_load(Path(args.paper).read_text())
    halving = yaml.safe_load(Path(args.halving).read_text())
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, {os.cpu_count()} CPUs")

    print("\nmeasured on this CPU, sustained training FLOP/s")
    patch_rates = {}
    for n_xy, n_z in ((33, 1), (65, 5), (113, 11)):
        patch_rates[(n_xy, n_z)] = measured_patch_rate(n_xy, n_z, args.batches)
        print(f"  patches {n_xy:>3}x{n_z:<2} {patch_rates[(n_xy, n_z)] / 1e9:8.1f} GFLOP/s")
    dense_rate = measured_dense_rate(81, 3, steps=3)
    print(f"  dense    81x3  {dense_rate / 1e9:8.1f} GFLOP/s")
    patch_rate = float(np.median(list(patch_rates.values())))

    print(
        f"\n{'configuration':<36} {'cells':>5} {'runs':>6} {'epochs':>8} {'samples':>9} "
        f"{'PFLOP':>9} {'CPU-h':>9} {'GPU-h*':>8} {'vs paper':>8}"
    )
    reference = None
    for config in configurations(paper, halving):
        cost = grid_cost(config)
        rate = dense_rate if config.mode == "dense" else patch_rate
        reference = reference or cost["flops"]
        print(
            f"{config.name:<36} {cost['cells']:>5} {cost['runs']:>6} {cost['epochs']:>8} "
            f"{cost['samples']:>9.2e} {cost['flops'] / 1e15:>9.1f} "
            f"{cost['flops'] / rate / 3600:>9.0f} "
            f"{cost['flops'] / (args.gpu_tflops * 1e12) / 3600:>8.0f} "
            f"{cost['flops'] / reference:>8.3f}"
        )
    print(
        f"\nCPU-h: at the FLOP/s measured above on this machine (patches: the median of the "
        f"three cells, {patch_rate / 1e9:.1f} GFLOP/s; dense: {dense_rate / 1e9:.1f} GFLOP/s)."
        f"\n* GPU-h is an ESTIMATE at an assumed sustained {args.gpu_tflops:g} TFLOP/s, not a "
        "measurement."
    )
    unet_cost(paper, halving, dense_rate)
    tile, voxels = tile_flops(81, 3)
    print(
        "forward FLOPs per patch: "
        + ", ".join(
            f"{n}x{z} {patch_flops(n, z, 'same') / 1e6:.0f} M"
            for n, z in ((33, 1), (65, 5), (113, 11))
        )
        + f"; dense 81x3, per labelled voxel of a tile: {tile / voxels / 1e3:.0f} k"
    )


if __name__ == "__main__":
    main()
