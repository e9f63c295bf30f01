"""A bundle's segmentation of a fixed volume stays voxel for voxel the same: tiny bundles
built deterministically (the U-Net, and the patch CNN on the sliding and the dense engines)
segment a fixed volume through `fibseg predict`, and the SHA-256 of the segmentation's bytes
is the one the code gave before the networks were put in a registry (issue 38)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import imwrite
from scipy import ndimage as ndi

import fibseg.pipeline.predict as predict
from fibseg.cli import main
from fibseg.inference.bundle import METADATA, describe_model, export_bundle
from fibseg.runtime.settings import InferenceSettings

VOXEL = ["--voxel-size", "50,10,10"]

# case: (SHA-256 of the uint8 segmentation, its solid fraction), computed on the code before
# the registry (commit 035593b)
PINNED = {
    "unet": ("a8262e6a236a205f7c431a4ebb527c88c08cdcfe3f690b278064cff1bec5751b", 0.5738),
    "patch_sliding": ("8f075222a1c8b8d383493f5f003efe46a62820fd5253b7e815827aa3307049c7", 0.5339),
    "patch_dense_valid": (
        "1a65b7b090e8ef584f219f58294c17e993dfe0ef94d6372a2be2f2a5a84e8d31",
        0.3244,
    ),
    "patch_dense_same": ("58dc91fdcddb93c5174b9e3f5f18753dabaee30c1b95063d1f19566baee0b418", 0.581),
}


def film() -> np.ndarray:
    """5 slices of 48 x 48: bright solid grains in a dark pore phase, with noise."""
    rng = np.random.default_rng(38)
    solid = ndi.gaussian_filter(rng.random((5, 48, 48)), (0, 3, 3)) > 0.5
    noisy = np.where(solid, 170, 70) + rng.normal(0, 10, solid.shape)
    return noisy.clip(0, 255).astype(np.uint8)


def network(case: str):
    """The case's untrained network, its weights fixed by the seed."""
    from fibseg.networks.model import build_model
    from fibseg.networks.unet import build_unet

    if case == "unet":
        return build_unet(3, seed=0)
    if case == "patch_dense_valid":
        return build_model(77, 3, "valid", seed=0)
    if case == "patch_dense_same":
        return build_model(33, 3, "same", seed=0)
    return build_model(17, 3, "same", seed=0)


CASES = {
    # case: (inference settings the bundle fixes, the description's architecture entry,
    # the post-processing threshold: about the median score, so that both phases are large)
    "unet": ({"engine": "dense"}, {"n_xy": 32, "padding": "unet"}, 0.5),
    "patch_sliding": ({"engine": "sliding"}, {"n_xy": 17, "padding": "same"}, 0.513),
    "patch_dense_valid": ({"engine": "dense"}, {"n_xy": 77, "padding": "valid"}, 0.546),
    "patch_dense_same": (
        {"engine": "dense", "allow_approximate_dense": True},
        {"n_xy": 33, "padding": "same"},
        0.5,
    ),
}


def make_bundle(folder: Path, case: str) -> Path:
    engine, entry, threshold = CASES[case]
    results = folder / "results"
    (results / "model").mkdir(parents=True)
    network(case).save(results / "model" / "best.keras")
    postprocess = {"sigma": 1.0, "threshold": threshold, "min_object_voxels": 10}
    (results / "postprocess.json").write_text(json.dumps(postprocess))
    description = describe_model(
        {"best.keras": str(results / "model" / "best.keras")},
        {"n_xy": entry["n_xy"], "n_z": 3, "seed": 0, "run_dir": "results/train/x", "ensemble": []},
        str(results / "postprocess.json"),
        [{"name": "A", "voxel_size_nm": [50.0, 10.0, 10.0]}],
        asdict(replace(InferenceSettings(), **engine)),
        {"method": "joint"},
        [{"file": "best.keras", "n_z": 3, **entry}],
        {"keras": "3"},
    )
    (results / "model" / METADATA).write_text(json.dumps(description))
    return export_bundle(results, folder / "bundle").path


@pytest.mark.parametrize("case", list(CASES))
def test_a_bundle_segments_a_fixed_volume_as_before(case, tmp_path, monkeypatch, capsys):
    import keras

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(predict, "configure_threads", lambda threads: None)
    keras.utils.set_random_seed(0)
    bundle = make_bundle(tmp_path / "made", case)
    imwrite(tmp_path / "film.tif", film())
    code = main(["predict", str(bundle), "film.tif", "segmentation.tif", *VOXEL])
    assert code == 0, capsys.readouterr().err
    segmentation = tifffile.imread("segmentation.tif")
    assert segmentation.shape == (5, 48, 48) and segmentation.dtype == np.uint8
    digest = hashlib.sha256(np.ascontiguousarray(segmentation).tobytes()).hexdigest()
    assert (digest, round(float(segmentation.mean()), 4)) == PINNED[case]
