import hashlib

import numpy as np
import pytest
from skimage.filters import threshold_otsu
from skimage.registration import phase_cross_correlation

from fibseg.demo.synth import SynthSpec, cut_regions, seen_after_alignment, synthesize
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
