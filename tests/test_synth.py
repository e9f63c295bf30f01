import numpy as np
import pytest
from skimage.filters import threshold_otsu

from fibseg.metrics import miou, porosity
from fibseg.synth import SynthSpec, synthesize


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
