import hashlib

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.registration import phase_cross_correlation

from fibseg.demo.films import (
    FAMILIES,
    FAMILY_CHOICES,
    FAMILY_FIXED,
    HARD_FILM,
    hard_film_spec,
    random_film_spec,
    styled_spec,
)
from fibseg.demo.synth import (
    GEOMETRIES,
    SynthSpec,
    cut_regions,
    porous_structure,
    render_face,
    seen_after_alignment,
    synthesize,
)
from fibseg.evaluation.metrics import miou, porosity
from fibseg.preprocess.alignment import apply_transform
from fibseg.preprocess.registration import estimate_alignment
from fibseg.runtime.settings import AlignSettings


@pytest.fixture(scope="module")
def hpc30():
    return synthesize(SynthSpec(porosity=0.30, slices=12, height=128, width=128, seed=3))


def test_shapes_types_and_porosity(hpc30):
    assert hpc30["volume"].shape == (12, 128, 128) and hpc30["volume"].dtype == np.uint16
    assert hpc30["truth"].shape == (12, 128, 128) and set(np.unique(hpc30["truth"])) == {0, 1}
    assert abs(porosity(hpc30["truth"]) - 0.30) < 0.03


def test_regions_are_labelled_from_the_truth(hpc30):
    table, labels = hpc30["regions"], hpc30["labels"]
    assert len(table) == len(labels) == 20
    for row, label in zip(table.itertuples(), labels, strict=True):
        window = hpc30["truth"][row.z, row.y : row.y + row.height, row.x : row.x + row.width]
        np.testing.assert_array_equal(label, window)


def test_seeded():
    a = synthesize(SynthSpec(porosity=0.4, slices=3, height=48, width=48, seed=9))
    b = synthesize(SynthSpec(porosity=0.4, slices=3, height=48, width=48, seed=9))
    c = synthesize(SynthSpec(porosity=0.4, slices=3, height=48, width=48, seed=10))
    np.testing.assert_array_equal(a["volume"], b["volume"])
    assert not np.array_equal(a["volume"], c["volume"])


def test_global_otsu_does_not_solve_it(hpc30):
    volume = hpc30["volume"]
    otsu = volume > threshold_otsu(volume)
    assert miou(hpc30["truth"], otsu) < 0.75


def test_shine_through_makes_shallow_pores_brighter():
    spec = SynthSpec(
        porosity=0.35,
        slices=10,
        height=96,
        width=96,
        seed=5,
        noise=0.0,
        drift_px=0,
        drift_deg=0,
        curtaining=0,
        gradient=0,
    )
    data = synthesize(spec)
    truth, image = data["truth"], data["volume"].astype(float)
    pore_now = truth[:-1] == 0
    behind_solid = pore_now & (truth[1:] == 1)
    behind_pore = pore_now & (truth[1:] == 0)
    assert image[:-1][behind_solid].mean() > image[:-1][behind_pore].mean() + 1000


def residual_shifts(volume: np.ndarray, truth: np.ndarray, settings: AlignSettings) -> np.ndarray:
    """Per slice, how far (px) the truth lies from the aligned volume (phase correlation)."""
    transforms = estimate_alignment(volume, settings).transforms
    aligned = [
        apply_transform(plane, m).astype(float) for plane, m in zip(volume, transforms, strict=True)
    ]
    return np.array(
        [
            np.hypot(*phase_cross_correlation(t.astype(float), a, upsample_factor=10)[0])
            for t, a in zip(truth, aligned, strict=True)
        ]
    )


@pytest.mark.parametrize(
    "settings",
    [
        AlignSettings(),
        AlignSettings(method="previous", model="rigid"),
        AlignSettings(method="previous", model="translation"),
    ],
    ids=["joint", "previous-rigid", "previous-translation"],
)
def test_truth_and_labels_are_moved_into_the_frame_of_the_alignment(settings):
    # No registration undoes the drift exactly (on 128 x 128 slices, the structure's own
    # change moves it by tenths of a pixel per slice): the aligned volume lies away from the
    # sample frame. seen_after_alignment follows it, for rule align's default and the
    # paper's chain, rigid and translation only.
    spec = SynthSpec(porosity=0.22, slices=24, height=128, width=128, seed=22, drift_px=1.0)
    data = synthesize(spec)
    seen = seen_after_alignment(data, settings)
    before = residual_shifts(data["volume"], data["truth"], settings)
    after = residual_shifts(data["volume"], seen["truth"], settings)
    assert before.max() > 1.5 and after.max() <= 0.75 and after.mean() < 0.3, (before, after)
    np.testing.assert_array_equal(seen["labels"], cut_regions(seen["truth"], data["regions"]))
    np.testing.assert_array_equal(seen["volume"], data["volume"])
    assert set(np.unique(seen["truth"])) == {0, 1}


def test_drift_maps_the_acquired_slice_onto_the_truth():
    # without noise and artefacts, undoing the returned drift recovers slice 0's frame
    spec = SynthSpec(
        porosity=0.3, slices=6, height=96, width=96, seed=1, drift_px=2.0, noise=0.0,
        curtaining=0.0, gradient=0.0, charging=0.0,
    )  # fmt: skip
    data = synthesize(spec)
    assert np.abs(data["drift"][-1][:2, 2]).max() > 1  # it drifted
    sharp = SynthSpec(**{**spec.__dict__, "drift_px": 0.0, "drift_deg": 0.0})
    undrifted = synthesize(sharp)["volume"].astype(float)
    inner = (slice(12, -12), slice(12, -12))
    for z in range(1, spec.slices):
        back, wrong_way = (
            apply_transform(data["volume"][z].astype(float), matrix)
            for matrix in (np.linalg.inv(data["drift"][z]), data["drift"][z])
        )
        error, wrong, moved = (
            np.abs(image - undrifted[z])[inner].mean()
            for image in (back, wrong_way, data["volume"][z])
        )  # what is left is interpolation (about 1 % of the intensity)
        assert error < 0.25 * moved and wrong > 2 * error, (z, error, wrong, moved)


@pytest.mark.parametrize(
    ("spec", "digest", "total", "drift"),
    [
        (
            SynthSpec(porosity=0.3, slices=6, height=64, width=64, seed=3),
            "918ee2c12a610454",
            948476973,
            (-0.273727, 1.911121),
        ),
        (
            SynthSpec(
                porosity=0.22, slices=5, height=48, width=56, seed=22, drift="trend",
                fiducial=True,
            ),
            "4603ab1366a1287a",
            440168018,
            (2.521192, -0.647766),
        ),
    ],
    ids=["walk", "trend-fiducial"],
)  # fmt: skip
def test_the_easy_generator_is_pinned(spec, digest, total, drift):
    # The demo's default generator, pinned: the truth, regions and labels exactly, the volume
    # by its sum (a float rounding elsewhere may move a voxel by one count, any change of
    # the generator moves it by far more) and the drift of the last slice.
    data = synthesize(spec)
    h = hashlib.sha256()
    for key in ("truth", "labels"):
        h.update(np.ascontiguousarray(data[key]).tobytes())
    h.update(data["regions"].to_csv(index=False).encode())
    assert h.hexdigest()[:16] == digest
    assert abs(int(data["volume"].astype(np.int64).sum()) - total) <= 50
    np.testing.assert_allclose(data["drift"][-1][:2, 2], drift, atol=1e-5)


# --- the hard films ---------------------------------------------------------------------------


def small_hard(seed: int, **overrides) -> SynthSpec:
    return hard_film_spec(
        0.3, seed, slices=6, height=64, width=64, n_regions=3, region_size=16, **overrides
    )


# the easy generator's values of the fields the hard preset sets
SHARED_EASY = {k: getattr(SynthSpec(porosity=0.3), k) for k in HARD_FILM}


def test_the_hard_preset_is_deterministic_per_seed():
    a, b, c = (synthesize(small_hard(seed)) for seed in (4, 4, 5))
    for key in ("volume", "truth", "labels", "drift"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["regions"].equals(b["regions"])
    assert not np.array_equal(a["volume"], c["volume"])
    assert not np.array_equal(a["truth"], c["truth"])
    assert abs(porosity(a["truth"]) - 0.3) < 0.05
    easy = synthesize(SynthSpec(**{**small_hard(4).__dict__, **SHARED_EASY}))
    assert not np.array_equal(a["volume"], easy["volume"])


def rendered_pore(behind: int | None, spec: SynthSpec) -> float:
    """Mean intensity of a pore face that has solid `behind` slices behind it (None: none
    within reach), rendered without grain, away from the solid's edges."""
    solid = np.zeros((spec.shine_layers + 2, 64, 64), bool)
    if behind is not None:
        solid[behind] = True
    image = render_face(solid, 0, spec, np.zeros(solid.shape, np.float32))
    return float(image[16:48, 16:48].mean())


def test_shine_through_makes_a_pore_show_the_solid_behind_it():
    # An independent check of the shine-through on hand-made structures: a pore face with
    # solid one slice behind it is nearly as bright as a solid face (hard films), fading but
    # still clearly brighter three slices behind; with nothing behind it stays dark.
    spec = small_hard(0)
    solid_face = np.ones((spec.shine_layers + 1, 64, 64), bool)
    face = render_face(solid_face, 0, spec, np.zeros(solid_face.shape, np.float32))
    face = float(face[16:48, 16:48].mean())
    empty, one, three = (rendered_pore(d, spec) for d in (None, 1, 3))
    assert empty == pytest.approx(spec.pore_level, abs=1e-3)
    assert face == pytest.approx(spec.solid_level, abs=1e-3)
    contrast = face - empty
    assert (one - empty) / contrast > 0.9  # nearly as bright as the face
    assert 0.5 < (three - empty) / contrast < (one - empty) / contrast  # fading with depth
    assert rendered_pore(spec.shine_layers + 1, spec) == pytest.approx(empty, abs=1e-3)
    # the easy generator's shine-through is weaker where it matters: a thin solid is blurred
    easy = SynthSpec(porosity=0.3)
    peaks = {}  # a 4-pixel solid wall one slice behind
    for name, s in (("hard", spec), ("easy", easy)):
        grid = np.zeros((s.shine_layers + 1, 64, 64), bool)
        grid[1, :, 30:34] = True
        grain = np.zeros(grid.shape if s.texture_3d else grid.shape[1:], np.float32)
        image = render_face(grid, 0, s, grain)
        peaks[name] = (image[32, 31:33].mean() - s.pore_level) / (s.solid_level - s.pore_level)
    assert peaks["hard"] > 0.8 > peaks["easy"]


def test_in_a_hard_volume_a_pore_s_intensity_follows_the_solid_behind_it():
    spec = small_hard(7, drift="none", noise=0.0, curtaining=0.0, charging=0.0, gain_jitter=0.0)
    spec = SynthSpec(**{**spec.__dict__, "slices": 12, "height": 96, "width": 96})
    data = synthesize(spec)
    truth, image = data["truth"], data["volume"].astype(float) / 50000
    pore = truth[:-2] == 0
    solid_next = pore & (truth[1:-1] == 1)
    open_two = pore & (truth[1:-1] == 0) & (truth[2:] == 0)
    brighter = image[:-2][solid_next].mean() - image[:-2][open_two].mean()
    solid = image[truth == 1].mean()
    # solid one slice behind lifts a pore most of the way to the solid's own brightness
    assert brighter > 0.5 * (solid - image[:-2][open_two].mean()), brighter


def pore_radii(solid: np.ndarray) -> np.ndarray:
    """Per pore component of every slice, its inscribed radius (pixels) and its area."""
    out = []
    for plane in solid:
        labels, count = ndi.label(~plane)
        distance = ndi.distance_transform_edt(~plane)
        if count:
            radius = ndi.maximum(distance, labels, np.arange(1, count + 1))
            area = ndi.sum_labels(np.ones_like(distance), labels, np.arange(1, count + 1))
            out.append(np.column_stack([radius, area]))
    return np.concatenate(out)


def test_the_hard_films_have_pores_of_two_size_scales():
    shape = {"slices": 8, "height": 160, "width": 160}
    rng = np.random.default_rng

    def structure(**fields):
        spec = hard_film_spec(0.3, 2, **shape, **fields)
        return porous_structure(spec, rng(2), 0, 0, rng([2, 1]))

    both = structure()
    fine = structure(pore_sizes_xy=(), pore_shares=())
    coarse = structure(pore_size_xy=10.0, pore_sizes_xy=(), pore_shares=())
    for solid in (both, fine, coarse):
        assert abs(1 - solid.mean() - 0.3) < 0.005  # the porosity stays exact

    def deep(solid):  # share of the pore voxels 6 px or more from the solid in their slice
        distance = np.stack([ndi.distance_transform_edt(~plane) for plane in solid])
        return np.count_nonzero(distance >= 6) / np.count_nonzero(~solid)

    def small_pores(solid):  # pores (in a slice) no wider than 6 px, per slice
        radii = pore_radii(solid)
        return np.count_nonzero(radii[:, 0] <= 3) / len(solid)

    # the fine field alone has hardly any wide pores, the coarse one hardly any small ones;
    # the hard films have both
    assert deep(both) > 0.08 and deep(both) > 4 * deep(fine)
    assert small_pores(both) > 15 and small_pores(both) > 10 * small_pores(coarse)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_random_families_are_reproducible_and_stay_in_their_ranges(family):
    ranges = FAMILIES[family]
    first = [random_film_spec(np.random.default_rng(11), family) for _ in range(2)]
    assert first[0] == first[1]
    drawn = [
        random_film_spec(rng, family) for rng in [np.random.default_rng(12)] for _ in range(30)
    ]
    assert len({spec.seed for spec in drawn}) == 30
    voxel_ratio = SynthSpec.voxel_nm[1] / SynthSpec.voxel_nm[0]
    derived = {  # the drawn fields that are not SynthSpec's own
        "large_pore_xy": lambda spec: spec.pore_sizes_xy[0],
        "large_share": lambda spec: spec.pore_shares[0],
        "contrast": lambda spec: spec.solid_level - spec.pore_level,
        "pore_stretch_z": lambda spec: spec.pore_size_z / (spec.pore_size_xy * voxel_ratio),
    }
    for spec in drawn:
        for key, (low, high) in ranges.items():
            value = derived[key](spec) if key in derived else getattr(spec, key)
            assert low - 1e-9 <= value <= high + 1e-9, (family, key, value)
        for key, options in FAMILY_CHOICES.get(family, {}).items():
            assert getattr(spec, key) in options
        for key, value in FAMILY_FIXED[family].items():
            assert getattr(spec, key) == value
    # the draws spread over their ranges
    spread = np.ptp([s.shine_strength for s in drawn])
    assert spread > 0.5 * np.ptp(ranges["shine_strength"])
    with pytest.raises(ValueError, match="family"):
        random_film_spec(np.random.default_rng(0), "nonexistent")


def test_a_family_draw_synthesises_at_its_porosity():
    spec = random_film_spec(np.random.default_rng(3), "held_out", slices=12, height=128,
                            width=128, n_regions=3, region_size=16)  # fmt: skip
    data = synthesize(spec)
    assert data["volume"].shape == (12, 128, 128)
    assert abs(porosity(data["truth"]) - spec.porosity) < 0.06


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("porosity", [0.2, 0.5])
def test_every_geometry_has_its_porosity_and_connected_pores(geometry, porosity):
    """Exact porosity over the rendered box, and (at 0.5) pores that hold together: a
    labyrinth or the space between fibres, not isolated holes."""
    spec = SynthSpec(porosity, slices=10, height=96, width=96, geometry=geometry, seed=2)
    solid = porous_structure(spec, np.random.default_rng(2), 4, 16)
    assert solid.shape == (14, 128, 128)
    assert abs((1 - solid.mean()) - porosity) < 0.005
    if porosity == 0.5:
        pores, count = ndi.label(~solid)
        sizes = np.bincount(pores.ravel())[1:]
        assert sizes.max() > 0.9 * sizes.sum(), (geometry, count)


def test_fibres_are_long_and_the_labyrinth_has_one_scale():
    """Fibres: the solid's x-y slices are cut through straight fibres, so a solid pixel's
    neighbours along one direction stay solid far more than along the others. The
    labyrinth: no pore scale twice as large as `pore_size_xy` (its band pass)."""
    fibres = porous_structure(
        SynthSpec(0.6, slices=20, height=96, width=96, geometry="fibres", seed=4),
        np.random.default_rng(4),
        0,
        0,
    )
    solid = fibres.sum()
    along_z = (fibres[1:] & fibres[:-1]).sum() / solid
    assert along_z > 0.2  # fibres cross slices
    labyrinth = porous_structure(
        SynthSpec(0.5, slices=16, height=128, width=128, geometry="spinodal", seed=4),
        np.random.default_rng(4),
        0,
        0,
    )
    field = porous_structure(
        SynthSpec(0.5, slices=16, height=128, width=128, pore_size_xy=8.0, seed=4),
        np.random.default_rng(4),
        0,
        0,
    )
    # the band pass removes the large scales a low-pass field of twice the scale holds
    assert ndi.distance_transform_edt(~labyrinth).max() < ndi.distance_transform_edt(~field).max()
    with pytest.raises(ValueError, match="geometry"):
        porous_structure(SynthSpec(0.5, geometry="foam"), np.random.default_rng(0), 0, 0)


def test_styles():
    assert styled_spec(porosity=0.3, seed=1) == SynthSpec(porosity=0.3, seed=1)
    assert styled_spec("hard", porosity=0.3, seed=1) == hard_film_spec(0.3, 1)
    with pytest.raises(ValueError, match="style"):
        styled_spec("medium", porosity=0.3)
    with pytest.raises(ValueError, match="pore_shares"):
        synthesize(small_hard(0, pore_shares=(0.5, 0.2)))
