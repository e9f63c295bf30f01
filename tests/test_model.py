import numpy as np
import pytest

from fibseg.networks.model import (
    ModelConfigError,
    build_model,
    draw_hyperparameters,
    learning_rate,
)
from fibseg.runtime.settings import SearchRanges

TABLE_1 = {  # Skärberg et al. 2021, Table 1: number of weights, rows n_xy, columns n_z
    33: [225041, 225329, 225617, 225905, 226193, 226481],
    49: [276241, 276529, 276817, 277105, 277393, 277681],
    65: [347921, 348209, 348497, 348785, 349073, 349361],
    81: [440081, 440369, 440657, 440945, 441233, 441521],
    97: [552721, 553009, 553297, 553585, 553873, 554161],
    113: [685841, 686129, 686417, 686705, 686993, 687281],
}
N_Z = [1, 3, 5, 7, 9, 11]
SEARCH = SearchRanges()  # the defaults are the ranges of §3.7


@pytest.mark.parametrize("n_xy", sorted(TABLE_1))
def test_parameter_counts_match_table_1(n_xy):
    counts = [build_model(n_xy, n_z, "same").count_params() for n_z in N_Z]
    assert counts == TABLE_1[n_xy]


def test_architecture_layers():
    model = build_model(33, 3, "same", p_d=0.3, p_sd=0.2, weight_decay=1e-6)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 8 and kinds.count("MaxPooling2D") == 4
    spatial = kinds.index("SpatialDropout2D")
    assert kinds[spatial - 1] == "MaxPooling2D" and kinds[:spatial].count("MaxPooling2D") == 4
    assert [layer.units for layer in model.layers if type(layer).__name__ == "Dense"] == [
        128,
        64,
        1,
    ]
    assert kinds.count("Dropout") == 2
    assert [layer.filters for layer in model.layers if hasattr(layer, "filters")] == [
        16,
        16,
        32,
        32,
        64,
        64,
        80,
        80,
    ]
    assert model.layers[-1].activation.__name__ == "sigmoid"
    # Weight decay c * sum(w^2) over every kernel.
    kernels = [w for w in model.trainable_weights if "kernel" in w.path]
    expected = 1e-6 * sum(float(np.sum(np.square(np.asarray(k)))) for k in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-4)


def test_valid_padding_rejects_small_neighbourhoods():
    with pytest.raises(ModelConfigError, match=r"n_xy=65 is too small for padding 'valid'.*76"):
        build_model(65, 1, "valid")
    assert build_model(81, 1, "valid").output.shape == (None, 1)
    with pytest.raises(ModelConfigError, match="n_z=2 must be odd"):
        build_model(33, 2, "same")


def test_same_seed_same_draw_within_ranges():
    first = draw_hyperparameters(7, 113, 3, SEARCH)
    assert first == draw_hyperparameters(7, 113, 3, SEARCH)
    assert first != draw_hyperparameters(8, 113, 3, SEARCH)
    draws = [draw_hyperparameters(s, 33, 1, SEARCH) for s in range(200)]
    for key in ("a", "b", "p_d", "p_sd"):
        values = [d[key] for d in draws]
        assert getattr(SEARCH, key)[0] <= min(values) and max(values) <= getattr(SEARCH, key)[1]
    assert {d["k"] for d in draws} == set(SEARCH.k)
    assert {d["log10_lr0"] for d in draws} == set(SEARCH.log10_lr0)
    logs = np.log10([d["c"] for d in draws])
    assert -7 <= logs.min() and logs.max() <= -5 and logs.std() > 0.4


def test_step_learning_rate():
    assert learning_rate(0, -2.0, 8) == pytest.approx(0.01)
    assert learning_rate(7, -2.0, 8) == pytest.approx(0.01)
    assert learning_rate(8, -2.0, 8) == pytest.approx(10**-2.25)
    assert learning_rate(39, -2.5, 4) == pytest.approx(10 ** (-2.5 - 0.25 * 9))


@pytest.fixture(scope="module")
def forward_flops():
    """The FLOP count of the grid-cost study (benchmarks/grid_cost.py)."""
    from benchmarks.grid_cost import forward_flops

    return forward_flops


def test_forward_flops_of_patch_models_by_hand(forward_flops):
    """2 x multiply-adds of each convolution (3 x 3) and dense layer, pooling halving down."""
    same_33x1 = 2 * (
        33**2 * 9 * 1 * 16
        + 33**2 * 9 * 16 * 16
        + 16**2 * 9 * 16 * 32
        + 16**2 * 9 * 32 * 32
        + 8**2 * 9 * 32 * 64
        + 8**2 * 9 * 64 * 64
        + 4**2 * 9 * 64 * 80
        + 4**2 * 9 * 80 * 80
        + 2 * 2 * 80 * 128
        + 128 * 64
        + 64
    )
    assert forward_flops(build_model(33, 1, "same"), (1, 33, 33, 1)) == same_33x1
    valid_81x3 = 2 * (
        79**2 * 9 * 3 * 16
        + 77**2 * 9 * 16 * 16
        + 36**2 * 9 * 16 * 32
        + 34**2 * 9 * 32 * 32
        + 15**2 * 9 * 32 * 64
        + 13**2 * 9 * 64 * 64
        + 4**2 * 9 * 64 * 80
        + 2**2 * 9 * 80 * 80
        + 80 * 128
        + 128 * 64
        + 64
    )
    assert forward_flops(build_model(81, 3, "valid"), (5, 81, 81, 3)) == 5 * valid_81x3


def test_forward_flops_of_the_dense_training_twin_by_hand(forward_flops):
    """A 128 px tile of an 81 x 3 'valid' model: input 128 + 76 - 1 = 203 px. Each level runs
    two valid convolutions, a stride-1 pool and splits into 4 fragments of half the side;
    the dense layers run on the 256 fragments of 8 x 8 (= 128 x 128 outputs)."""
    from fibseg.training.dense import training_twin

    levels = [  # (fragments, side after conv 1, side after conv 2, in, out channels)
        (1, 201, 199, 3, 16),
        (4, 97, 95, 16, 32),
        (16, 45, 43, 32, 64),
        (64, 19, 17, 64, 80),
    ]
    by_hand = sum(
        n * 9 * (a**2 * c_in * c_out + b**2 * c_out * c_out) for n, a, b, c_in, c_out in levels
    )
    by_hand += 256 * 8**2 * (80 * 128 + 128 * 64 + 64)
    twin = training_twin(build_model(81, 3, "valid"))
    assert forward_flops(twin, (1, 203, 203, 3)) == 2 * by_hand
