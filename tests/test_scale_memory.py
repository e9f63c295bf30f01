"""Streaming stays honest: the same wide film of 32 and of 64 slices through the whole default
workflow (benchmarks/scale.py, a random-weight U-Net as its bundle), and every job's exact
peak memory (the line each log ends with) does not grow with the number of slices. Jobs work
in units of 16 slices (a predict job, a post-processing or export slab) and may hold two at a
time, so both depths have at least two of them."""

import pytest

from benchmarks.scale import logged_peaks, run_workflow, write_project

pytestmark = pytest.mark.workflow

SHAPE = (512, 1024)  # 32 more slices are 16 MB as uint8, 64 MB as float32
# Rules that read or write the whole volume; each must hold a bounded number of slices.
HEAVY = (
    "check_dataset",
    "align",
    "correct_gradient",
    "predict_slices",
    "stitch",
    "postprocess",
    "evaluate_volume",
    "analyze_structure",
    "export_ome_zarr",
    "figure_slices",
)
DEPTHS = (32, 64)
GROWTH_MB = 12  # three quarters of one uint8 copy of the 32 added slices
# glibc hands out freed arrays of up to 32 MB again from its heap (its mmap threshold grows
# with each free), so a job's peak wobbles by about a slab from run to run. With a fixed
# threshold every large array is mapped and unmapped, and the peak is the memory in use;
# what still varies (tifffile's write buffer, about 8 MB) stays under GROWTH_MB.
EXACT_PEAKS = {"MALLOC_MMAP_THRESHOLD_": "65536"}
# export_ome_zarr writes through dask on two threads and holds up to three slabs of 16 slices;
# how many are alive at its peak depends on the threads' timing, so its peak varies by up to
# one slab of float32 (32 MB here) from run to run (measured: -12 and +16 MB)
SLAB_MB = 16 * SHAPE[0] * SHAPE[1] * 4 / 2**20
ALLOWED_MB = {"export_ome_zarr": SLAB_MB}


def test_peak_memory_of_every_heavy_rule_does_not_grow_with_the_depth(tmp_path):
    peaks = {}
    for depth in DEPTHS:
        project = tmp_path / f"depth{depth}"
        project.mkdir()
        write_project(project, (depth, *SHAPE), train=False, bundle=None)
        run_workflow(project, cores=2, env=EXACT_PEAKS)
        peaks[depth] = logged_peaks(project)
    low, high = (peaks[depth] for depth in DEPTHS)
    missing = [rule for rule in HEAVY if rule not in low or rule not in high]
    assert not missing, f"no peak logged by {missing}"
    growth = {rule: high[rule] - low[rule] for rule in HEAVY}
    assert all(mb < ALLOWED_MB.get(rule, GROWTH_MB) for rule, mb in growth.items()), (
        f"peak MB from {DEPTHS[0]} to {DEPTHS[1]} slices: {growth}; at {DEPTHS[0]}: {low.to_dict()}"
    )
