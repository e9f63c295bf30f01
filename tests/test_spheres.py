"""The held-out simulator (fibseg.demo.spheres): its volumes, truth and regions."""

import numpy as np
import pytest

from fibseg.demo.spheres import SphereSpec, synthesize_spheres

SMALL = {"slices": 8, "height": 96, "width": 96, "n_regions": 4, "region_size": 24}


@pytest.mark.parametrize("porosity", [0.22, 0.45])
def test_spheres_hit_the_porosity_and_cut_labels_from_the_truth(porosity):
    made = synthesize_spheres(SphereSpec(porosity, seed=3, **SMALL))
    volume, truth, regions, labels = (made[k] for k in ("volume", "truth", "regions", "labels"))
    assert volume.shape == truth.shape == (8, 96, 96)
    assert volume.dtype == np.uint16 and truth.dtype == np.uint8
    assert set(np.unique(truth)) == {0, 1}
    assert abs((truth == 0).mean() - porosity) < 0.01  # the radius shift makes it exact
    assert len(regions) == len(labels) == 4 and labels.shape[1:] == (24, 24)
    for region, label in zip(regions.itertuples(), labels, strict=True):
        cut = truth[region.z, region.y : region.y + 24, region.x : region.x + 24]
        np.testing.assert_array_equal(label, cut)
    # solid is brighter than pore on average, with shine-through and noise in between
    assert volume[truth == 1].mean() > volume[truth == 0].mean()


def test_spheres_are_seeded():
    first = synthesize_spheres(SphereSpec(0.3, seed=5, **SMALL))
    again = synthesize_spheres(SphereSpec(0.3, seed=5, **SMALL))
    other = synthesize_spheres(SphereSpec(0.3, seed=6, **SMALL))
    np.testing.assert_array_equal(first["volume"], again["volume"])
    np.testing.assert_array_equal(first["truth"], again["truth"])
    assert not np.array_equal(first["truth"], other["truth"])
