"""The pore-structure analysis against objects whose answers are known analytically."""

import json
import math

import numpy as np
import pytest

from fibseg.runtime.settings import StructureSettings
from fibseg.structure.analysis import analyze, json_safe, scalar_metrics, structure_table
from fibseg.structure.grid import analysis_shape, resample
from fibseg.structure.sizes import local_thickness, size_distribution, surface_area
from fibseg.structure.transport import (
    clusters,
    connectivity,
    diffusive_tortuosity,
    geometric_tortuosity,
)


def ball(radius: float, voxel: tuple[float, ...], margin: float = 4.0) -> np.ndarray:
    """A ball (True) of `radius` nm centred in a box sampled at voxel centres."""
    counts = [int(round(2 * (radius + margin) / v)) for v in voxel]
    axes = [(np.arange(n) + 0.5 - n / 2) * v for n, v in zip(counts, voxel, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return z**2 + y**2 + x**2 <= radius**2


def test_local_thickness_of_a_ball_is_its_diameter():
    inside = ball(120, (10.0, 10.0, 10.0))
    sizes = size_distribution(local_thickness(inside, (10.0, 10.0, 10.0)), inside)
    assert sizes["d50_nm"] == 240 and sizes["d90_nm"] == 240
    assert sizes["mean_nm"] == pytest.approx(240, rel=0.01)


@pytest.mark.parametrize("voxel", [(10.0, 10.0, 10.0), (50.0, 10.0, 10.0)])
def test_local_thickness_of_a_slab_is_its_width_at_any_voxel(voxel):
    """A 200 nm slab normal to z: 20 slices of 10 nm or 4 of 50 nm; every voxel 200 nm."""
    slices = int(200 / voxel[0])
    slab = np.zeros((3 * slices, 8, 8), bool)
    slab[slices : 2 * slices] = True
    thickness = local_thickness(slab, voxel)
    assert np.all(thickness[slab] == 200) and np.all(thickness[~slab] == 0)
    across = np.zeros((8, 8, 60), bool)  # the same slab normal to x
    across[:, :, 20:40] = True
    assert np.all(local_thickness(across, (10.0, 10.0, 10.0))[across] == 200)


def straight_channels() -> np.ndarray:
    """Two square channels along x, open at both x faces, closed to y and z."""
    pore = np.zeros((20, 20, 30), bool)
    pore[4:8, 4:8] = True
    pore[12:15, 10:16] = True
    return pore


@pytest.mark.parametrize("voxel", [(1.0, 1.0, 1.0), (5.0, 1.0, 2.0)])
def test_straight_channels_have_tortuosity_one_along_their_axis(voxel):
    pore = straight_channels()
    assert geometric_tortuosity(pore, 2, voxel) == pytest.approx(1, abs=1e-12)
    diffusive = diffusive_tortuosity(pore, 2, voxel)
    assert diffusive["tortuosity"] == pytest.approx(1, abs=1e-5)
    assert diffusive["effective_porosity"] == pytest.approx(pore.mean())
    assert diffusive["flux_mismatch"] < 1e-4
    for axis in (0, 1):  # closed across: nothing to cross
        assert math.isnan(geometric_tortuosity(pore, axis, voxel))
        assert math.isnan(diffusive_tortuosity(pore, axis, voxel)["tortuosity"])


def test_a_45_degree_zigzag_has_geometric_tortuosity_sqrt2():
    """A channel 3 voxels wide whose centre line zig-zags at 45° with runs of 40 voxels."""
    run, length = 40, 321
    pore = np.zeros((3, run + 5, length), bool)
    centre = np.abs(np.arange(length) % (2 * run) - run) + 2
    for x, y in enumerate(centre):
        pore[1, y - 1 : y + 2, x] = True
    tortuosity = geometric_tortuosity(pore, 2, (1.0, 1.0, 1.0))
    assert tortuosity == pytest.approx(math.sqrt(2), rel=0.03)
    assert tortuosity < math.sqrt(2)  # the path may cut the corners inside the channel


def detour(step_y: float) -> np.ndarray:
    """A 30 × 30 nm pore path in the y-x plane that turns twice, sampled 1 nm in x and
    `step_y` nm in y (its edges lie on both grids), 3 planes deep."""
    y = (np.arange(int(30 / step_y)) + 0.5) * step_y
    y, x = np.meshgrid(y, np.arange(30) + 0.5, indexing="ij")
    plane = (y > 2) & (y < 6) & (x < 15)
    plane |= (y > 2) & (y < 26) & (x > 12) & (x < 15)
    plane |= (y > 22) & (y < 26) & (x > 12)
    return np.repeat(plane[None], 3, axis=0)


def test_diffusive_tortuosity_of_a_detour_is_the_same_on_anisotropic_voxels():
    """The solver's face conductances carry the spacing: the same detour on 1 × 2 nm (y)
    voxels gives the tortuosity of 1 × 1 nm ones (the turns' discretisation differs)."""
    fine = diffusive_tortuosity(detour(1.0), 2, (1.0, 1.0, 1.0))
    coarse = diffusive_tortuosity(detour(2.0), 2, (1.0, 2.0, 1.0))
    assert fine["tortuosity"] > 2  # the turns cost more than the path's length
    assert coarse["tortuosity"] == pytest.approx(fine["tortuosity"], rel=0.02)
    assert coarse["effective_porosity"] == pytest.approx(fine["effective_porosity"])
    geometric = geometric_tortuosity(detour(2.0), 2, (1.0, 2.0, 1.0))
    assert geometric == pytest.approx(geometric_tortuosity(detour(1.0), 2, (1.0,) * 3), rel=0.02)


def test_percolation_on_constructed_cases():
    channels = connectivity(*clusters(straight_channels()))
    assert channels["percolates_x"] and not channels["percolates_y"]
    assert not channels["percolates_z"]
    assert channels["connected_to_x0"] == 1 and channels["connected_to_y0"] == 0
    assert channels["largest_cluster_fraction"] == pytest.approx(18 / (16 + 18))
    plugged = straight_channels()
    plugged[:, :, 15] = False  # a solid wall across both channels
    blocked = connectivity(*clusters(plugged))
    assert not any(blocked[f"percolates_{axis}"] for axis in "zyx")
    assert blocked["clusters"] == 4 and blocked["connected_to_x0"] == pytest.approx(15 / 29)
    cavity = connectivity(*clusters(ball(8, (1.0, 1.0, 1.0))))
    assert cavity["clusters"] == 1 and cavity["connected_to_z0"] == 0
    assert not any(cavity[f"percolates_{axis}"] for axis in "zyx")
    diagonal = np.zeros((4, 4, 4), bool)  # voxels that touch only at edges do not connect
    diagonal[1, 1, 0] = diagonal[1, 2, 1] = diagonal[1, 1, 2] = diagonal[1, 2, 3] = True
    assert not connectivity(*clusters(diagonal))["percolates_x"]


@pytest.mark.parametrize("voxel", [1.0, 2.5])
def test_surface_area_of_a_ball_within_two_percent(voxel):
    radius = 15 * voxel
    inside = ball(radius, (voxel,) * 3)
    area = surface_area(inside, (voxel,) * 3)
    assert area == pytest.approx(4 * math.pi * radius**2, rel=0.02)


def tube(voxel: tuple[float, ...]) -> np.ndarray:
    """Solid (1) with a pore tube of radius 7 nm at 45° in the z-x plane, from face z0/x0 to
    z1/x1, and a separate spherical cavity: 64 × 32 × 64 nm sampled at `voxel`."""
    axes = [(np.arange(int(e // v)) + 0.5) * v for e, v in zip((64, 32, 64), voxel, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    tube = (z - x) ** 2 / 2 + (y - 16) ** 2 <= 7**2
    cavity = (z - 40) ** 2 + (y - 16) ** 2 + (x - 12) ** 2 <= 9**2
    return np.where(tube | cavity, 0, 1).astype(np.uint8)


def test_anisotropic_voxels_give_the_physical_answers_of_isotropic_ones():
    """The same object sampled at 1 × 1 × 1 nm and at 4 × 1 × 1 nm (z), analysed on a 1 nm
    grid: shape-based interpolation recovers what the thick slices dropped."""
    settings = StructureSettings(voxel_nm=1.0)
    iso, _ = analyze(tube((1.0, 1.0, 1.0)), (1.0, 1.0, 1.0), settings)
    aniso, _ = analyze(tube((4.0, 1.0, 1.0)), (4.0, 1.0, 1.0), settings)
    assert aniso["analysis_grid"]["shape"] == iso["analysis_grid"]["shape"] == [64, 32, 64]
    assert aniso["porosity"]["profiles"]["z"]["position_nm"][:2] == [2.0, 6.0]
    a, b = scalar_metrics(iso), scalar_metrics(aniso)
    close = {
        "porosity_analysis_grid": 0.02,
        "specific_surface_area_per_um": 0.03,
        "pore_diameter_mean_nm": 0.03,
        "solid_diameter_mean_nm": 0.03,
        "largest_cluster_fraction": 0.03,
        "connected_to_x0": 0.03,
        "tortuosity_geometric_z": 0.03,
        "tortuosity_geometric_x": 0.03,
        "tortuosity_diffusive_z": 0.03,
        "tortuosity_diffusive_x": 0.03,
    }
    for metric, tolerance in close.items():
        assert b[metric] == pytest.approx(a[metric], rel=tolerance), metric
    assert b["pore_diameter_d50_nm"] == a["pore_diameter_d50_nm"]
    for metric in ("percolates_z", "percolates_y", "percolates_x", "clusters"):
        assert b[metric] == a[metric], metric
    assert a["tortuosity_geometric_x"] > 1.2 and math.isnan(a["tortuosity_geometric_y"])


def test_analysis_grid_bound_and_resampling():
    grid, spacing = analysis_shape(
        (200, 2247, 3372), (50, 10, 10), StructureSettings(max_voxels=50_000_000)
    )
    assert math.prod(grid) <= 50_000_000
    assert max(spacing) / min(spacing) < 1.01
    assert [g * h for g, h in zip(grid, spacing, strict=True)] == pytest.approx(
        [10_000, 22_470, 33_720]
    )
    fine, _ = analysis_shape((32, 256, 256), (50, 10, 10), StructureSettings(max_voxels=10**9))
    assert fine == (160, 256, 256)  # never finer than the finest native voxel
    pore = np.random.default_rng(0).random((6, 10, 10)) < 0.5
    assert resample(pore, (1.0, 1.0, 1.0), (6, 10, 10)) is pore


def test_table_holds_segmentation_truth_and_difference():
    iso, maps = analyze(tube((1.0, 1.0, 1.0)), (1.0, 1.0, 1.0), StructureSettings())
    assert set(np.unique(maps["clusters"])) <= {0, 1, 2} and maps["clusters"].shape == (32, 64)
    shifted = json.loads(json.dumps(json_safe(iso)))  # a round trip through strict JSON
    shifted["porosity"]["overall"] += 0.1
    rows = structure_table(
        {"A": {"segmentation": shifted, "truth": iso}, "B": {"segmentation": iso}}
    )
    by_key = {(row["dataset"], row["metric"]): row for row in rows}
    assert by_key["A", "porosity"]["difference"] == pytest.approx(0.1)
    assert math.isnan(by_key["B", "porosity"]["truth"])
    assert math.isnan(by_key["A", "tortuosity_geometric_y"]["segmentation"])
