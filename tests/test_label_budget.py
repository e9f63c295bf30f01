"""The label-budget study's `demo` budgets claim to score the workflow demo's own data sets."""

import dataclasses

import numpy as np
import pytest
import yaml
from helpers import demo_config
from scipy import ndimage as ndi

from fibseg.demo.films import hard_film_spec, styled_spec
from fibseg.demo.synth import SynthSpec, synthesize
from studies import label_budget_data as data
from studies.common import REPO, demo_workflow
from studies.label_budget_data import BUDGETS, POROSITIES, QUICK, Budget, Context, make_data
from studies.label_budget_methods import UNET_N_XY, Schedule, cnn_settings, structure_columns


@pytest.fixture(scope="module")
def context():
    return Context(demo_workflow())


def prepare(kind, budget, directory, context):
    return data.prepare(kind, 0.3, 22, budget, directory, context)


@pytest.mark.parametrize("budget_name", ["demo", "demo_large"])
def test_demo_budgets_synthesise_the_workflow_demo_volumes(context, budget_name):
    """Same spec (size, porosity, seed, and for `demo` the regions) as config/demo.yaml's
    demo entries under config/demo_easy.yaml, so `--data demo_drift` scores the easy demo's
    HPC22 and HPC45 themselves, and `--data hard` the default demo's films without drift."""
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())["demo"]
    by_seed = {entry["seed"]: entry for entry in demo.values()}
    budget = BUDGETS[budget_name]
    for seed, porosity in POROSITIES.items():
        entry = by_seed[seed]
        assert entry["style"] == "hard"
        hard = styled_spec(**entry)
        assert hard == hard_film_spec(porosity, seed)
        if budget_name == "demo":
            made = make_data("hard", porosity, seed, budget, context.workflow)
            still = synthesize(dataclasses.replace(hard, drift="none"))
            assert np.array_equal(made["volume"], still["volume"])
            assert np.array_equal(made["truth"], still["truth"])
        workflow = styled_spec(**{**entry, "style": "easy"})
        study = SynthSpec(
            porosity,
            seed=seed,
            slices=budget.slices,
            height=budget.side,
            width=budget.side,
            n_regions=workflow.n_regions,
            region_size=workflow.region_size,
        )
        assert study == workflow
        if budget_name == "demo":
            assert (budget.n_regions, budget.region_size) == (
                workflow.n_regions,
                workflow.region_size,
            )


@pytest.mark.parametrize("kind", ["demo_drift_previous", "demo_drift_translation"])
def test_prepare_marks_where_the_aligned_volume_shows_the_sample(context, tmp_path, kind):
    """The paper's chain (`demo_drift_previous`, `_translation`) moves every later slice and
    marks the voxels the drift moved out of view; the reference slice is the first, so all
    of it is seen, and its truth keeps the volume's shape. The drift-free kind has nothing
    to mark."""
    budget = Budget("tiny", 4, 24, slices=6, side=96)
    drift = prepare(kind, budget, tmp_path / "drift", context)
    assert drift.truth.shape == drift.volume.shape == (6, 96, 96)
    assert drift.sampled.shape == drift.truth.shape and drift.sampled.dtype == bool
    assert drift.sampled[0].all()
    assert 0.8 < drift.sampled.mean() < 1.0  # the generator drifts by a few px per slice
    assert not drift.sampled[1:].all(axis=(1, 2)).all()
    plain = prepare("demo", budget, tmp_path / "plain", context)
    assert plain.sampled is None
    assert plain.volume.shape == (6, 96, 96)


def test_prepare_keeps_a_stack_whose_drift_is_below_the_noise(context, tmp_path):
    """`demo_drift` aligns as rule align does: on 6 slices of 96 x 96 its 2.5 px walk stays
    within the registration's noise (steps of +-1.5 px on the slice's halves), so the joint
    solve keeps the slices as acquired and every voxel counts as seen; at the demo's
    32 x 256 x 256 it finds the drift (tests/test_registration.py)."""
    budget = Budget("tiny", 4, 24, slices=6, side=96)
    drift = prepare("demo_drift", budget, tmp_path / "drift", context)
    assert drift.sampled.shape == drift.truth.shape == (6, 96, 96)
    assert drift.sampled.all()


def test_true_alignment_undoes_the_simulators_drift(context, tmp_path):
    """`demo_drift_true` aligns with the inverse of the simulator's drift: its truth is the
    drift-free kind's (same seed, same structure), and its volume lies closer to the
    drift-free volume than the paper's chain registers it."""
    budget = Budget("tiny", 4, 24, slices=6, side=96)
    kinds = ("demo", "demo_drift_previous", "demo_drift_true")
    made = {kind: prepare(kind, budget, tmp_path / kind, context) for kind in kinds}
    plain, registered, exact = made["demo"], made["demo_drift_previous"], made["demo_drift_true"]
    np.testing.assert_array_equal(exact.truth, plain.truth)
    assert not np.array_equal(registered.truth, plain.truth)
    seen = exact.sampled & registered.sampled
    assert seen.mean() > 0.9

    def distance(aligned):
        return np.abs(aligned.volume - plain.volume)[seen].mean()

    assert distance(exact) < 0.95 * distance(registered)


def test_offset_alignment_moves_the_image_off_the_truths_grid(context, tmp_path):
    """`demo_drift_offset` moves the exactly aligned slices by 0.4 px: the nearest voxel of the
    truth stays the same, the image does not."""
    budget = Budget("tiny", 4, 24, slices=6, side=96)
    kinds = ("demo_drift_true", "demo_drift_offset")
    made = {kind: prepare(kind, budget, tmp_path / kind, context) for kind in kinds}
    exact, offset = made["demo_drift_true"], made["demo_drift_offset"]
    np.testing.assert_array_equal(offset.truth, exact.truth)
    inner = (slice(None), slice(8, -8), slice(8, -8))

    def distance_after_shift(shift):
        shifted = ndi.shift(exact.volume, (0, shift, shift), order=3, mode="nearest")
        return np.abs(offset.volume - shifted)[inner].mean()

    # the exactly aligned volume read 0.4 px further on, up to the resamplings' smoothing
    nearest = distance_after_shift(-0.4)
    assert nearest < 0.6 * distance_after_shift(0.0)
    assert nearest < 0.5 * distance_after_shift(0.4)


@pytest.mark.parametrize("kind", ["hard", "calibration", "held_out"])
def test_film_kinds_are_still_films_at_the_studys_porosity(context, kind):
    """The hard films and the families' draws come without drift (the study measures the
    segmentation, not the alignment) and at the porosity the study asks for."""
    demo = BUDGETS["demo"]  # on 8 x 128^2 the large pores make porosity noisy
    made = make_data(kind, 0.30, 22, demo, context.workflow)
    assert np.allclose(made["drift"], np.eye(3))
    assert abs((made["truth"] == 0).mean() - 0.30) < 0.04
    again = make_data(kind, 0.30, 22, demo, context.workflow)
    assert np.array_equal(made["volume"], again["volume"])


def test_family_kinds_draw_different_films(context):
    """calibration and held_out are different families; seeds draw different films."""
    volume = {
        (kind, seed): make_data(kind, 0.30, seed, QUICK, context.workflow)["volume"]
        for kind in ("calibration", "held_out")
        for seed in (22, 45)
    }
    assert not np.array_equal(volume["calibration", 22], volume["held_out", 22])
    assert not np.array_equal(volume["held_out", 22], volume["held_out", 45])


def test_the_studys_unet_prior_trains_as_the_demo_and_the_default_config():
    """The study's `unet_prior` method is the demo's U-Net (config/config.yaml with
    config/demo.yaml), fine-tuned from the shipped prior (`unet`: the same from scratch):
    tile side, slices, optimiser, learning rate and its schedule, tiles per step, steps and
    epochs; with `--epochs-unet` and `--patience` set to the base file's, it is the default
    for real data (a cap of epochs and a patience)."""
    config = demo_config()
    settings = cnn_settings("unet_prior", Schedule())
    assert settings == cnn_settings("unet", Schedule())
    training = config["training"]
    assert training["init"] == "prior"
    assert config["model"]["architecture"] == "unet"
    assert config["grid"]["n_xy"] == [UNET_N_XY]
    assert config["grid"]["n_z"] == [data.N_Z]
    assert (settings.epochs, settings.patience) == (training["epochs"], training["patience"])
    assert settings.steps_per_epoch == training["steps_per_epoch"]
    assert settings.tiles_per_batch == training["tiles_per_batch"]
    assert settings.optimizer == training["optimizer"]
    search = training["search"]
    assert list(settings.search.log10_lr0) == search["log10_lr0"]
    assert list(settings.search.k) == search["k"]
    assert settings.search.lr_step == search.get("lr_step", 0.25)
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["training"]
    real = cnn_settings("unet_prior", Schedule(unet=base["epochs"], patience=base["patience"]))
    assert (real.epochs, real.patience) == (base["epochs"], base["patience"])
    assert real.patience is not None and real.epochs > settings.epochs
    assert dataclasses.replace(real, epochs=settings.epochs, patience=None) == settings


def test_the_fine_tuned_prior_at_a_tenth_of_the_rate_differs_only_in_its_rate():
    scratch, slow = cnn_settings("unet", Schedule()), cnn_settings("unet_prior_slow", Schedule())
    assert slow.search.log10_lr0 == (scratch.search.log10_lr0[0] - 1,)
    assert dataclasses.replace(slow, search=scratch.search) == scratch


def test_structure_columns_find_the_largest_cluster_and_the_percolating_axes():
    truth = np.ones((4, 8, 8), np.uint8)
    truth[:, 2, :] = 0  # a pore sheet along z and x: 32 voxels spanning both
    truth[1, 5, 5] = 0  # one isolated pore voxel
    segmentation = truth.copy()
    segmentation[:, 2, 4] = 1  # the sheet cut across x: two halves of 16 voxels
    columns = structure_columns(truth, segmentation)
    assert columns["largest_cluster_truth"] == pytest.approx(32 / 33)
    assert columns["largest_cluster_automatic"] == pytest.approx(16 / 29)
    assert columns["percolates_truth"] == "zx" and columns["percolates_automatic"] == "z"
    assert structure_columns(np.ones_like(truth), truth)["percolates_truth"] == "-"
