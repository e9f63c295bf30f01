"""The model and both engines use the Keras 3 API only: the same check under PyTorch."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

CHECK = textwrap.dedent("""
    import keras, numpy as np
    from scipy import ndimage as ndi
    from fibseg.inference.dense_engine import DenseEngine
    from fibseg.inference.sliding import sliding_scores
    from fibseg.networks.model import build_model
    assert keras.backend.backend() == "torch", keras.backend.backend()
    keras.utils.set_random_seed(0)
    model = build_model(81, 3, "valid", seed=0)
    field = ndi.gaussian_filter(np.random.default_rng(0).standard_normal((3, 19, 23)), (0, 3, 3))
    stack = (0.5 + 0.2 * field / field.std()).astype(np.float32)
    dense = DenseEngine(model, tile=16).scores(stack)
    sliding = sliding_scores(model, stack, 128, 64)
    print("max_abs_diff", float(np.abs(dense - sliding).max()))
    assert np.abs(dense - sliding).max() <= 1e-5
""")


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="PyTorch is not installed (pip install torch==2.13.0 for CPU)",
)
def test_dense_equals_sliding_under_pytorch():
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    process = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=600
    )
    assert process.returncode == 0, process.stdout + process.stderr
    assert "max_abs_diff" in process.stdout


UNET_CHECK = textwrap.dedent("""
    import keras, numpy as np
    from fibseg.inference.unet_engine import UnetEngine
    from fibseg.networks.unet import build_unet
    assert keras.backend.backend() == "torch", keras.backend.backend()
    model = build_unet(3, seed=0)
    stack = np.random.default_rng(1).normal(size=(3, 50, 77)).astype(np.float32)
    whole = UnetEngine(model, tile=4096).scores(stack)
    tiled = UnetEngine(model, tile=24).scores(stack)
    print("max_abs_diff", float(np.abs(whole - tiled).max()))
    assert np.abs(whole - tiled).max() <= 1e-5
""")


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="PyTorch is not installed (pip install torch==2.13.0 for CPU)",
)
def test_unet_tiles_equal_the_whole_slice_under_pytorch():
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    process = subprocess.run(
        [sys.executable, "-c", UNET_CHECK], capture_output=True, text=True, env=env, timeout=600
    )
    assert process.returncode == 0, process.stdout + process.stderr
    assert "max_abs_diff" in process.stdout
