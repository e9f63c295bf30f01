"""Ensembles: the mean of the members and their spread, one member giving exactly its own
scores, members of different n_z, and the choice of the k best runs."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from test_infer import image_like, spread_model

from fibseg.annotation.regions import RegionSet
from fibseg.inference.ensemble import (
    MARGIN,
    SPREAD,
    Member,
    cached_stack,
    combine,
    ensemble_regions,
    ensemble_slices,
    score_chunk,
)
from fibseg.inference.infer import make_scorer
from fibseg.io.writers import write_h5
from fibseg.networks.windows import neighbour_slices
from fibseg.runtime.settings import InferenceSettings
from fibseg.training.selection import collect_histories, select_model, top_runs

DENSE = InferenceSettings(engine="dense", tile=32)


@pytest.fixture(scope="module")
def members():
    """Two valid CNNs of different depth (n_z 1 and 3) on the dense engine."""
    return [
        Member(f"m{n_z}", n_z, make_scorer(model, "dense", DENSE), model)
        for n_z, model in (
            (1, spread_model(81, 1, "valid", 1)),
            (3, spread_model(81, 3, "valid", 2)),
        )
    ]


def test_combine_is_mean_and_std_or_the_margin_for_one_member():
    first, second = np.array([[0.1, 0.9]]), np.array([[0.3, 0.5]])
    mean, spread, kind = combine([first, second])
    np.testing.assert_allclose(mean, [[0.2, 0.7]], atol=1e-7)
    np.testing.assert_allclose(spread, [[0.1, 0.2]], atol=1e-7)
    assert kind == SPREAD
    alone, uncertainty, kind = combine([first.astype(np.float32)])
    assert alone is not None and np.array_equal(alone, first.astype(np.float32))
    np.testing.assert_allclose(uncertainty, [[0.1, 0.1]], atol=1e-7)
    assert kind == MARGIN


def test_one_member_gives_exactly_its_own_slice_scores(members):
    volume = image_like(np.random.default_rng(3), (5, 40, 36))
    member = members[1]
    scores, _, _ = ensemble_slices(lambda z: volume[z], 5, range(5), [member])
    own = np.stack([member.scorer(volume[neighbour_slices(z, 3, 5)]) for z in range(5)])
    assert np.array_equal(scores, own)


def test_members_read_their_own_slices_and_are_averaged(members):
    volume = image_like(np.random.default_rng(4), (4, 32, 32))
    scores, spread, kind = ensemble_slices(lambda z: volume[z], 4, range(1, 3), members)
    singles = [ensemble_slices(lambda z: volume[z], 4, range(1, 3), [m])[0] for m in members]
    np.testing.assert_allclose(scores, (singles[0] + singles[1]) / 2, atol=1e-6)
    np.testing.assert_allclose(spread, np.abs(singles[0] - singles[1]) / 2, atol=1e-6)
    assert kind == SPREAD and scores.shape == (2, 32, 32)


def test_a_job_reads_each_slice_once(members):
    """Slices 0-5 of a 6-slice volume with members of n_z 1 and 3: six reads of one slice
    each (mirroring at the ends reads nothing twice) and the same scores as reading every
    stack; a stack read through the cache is the volume's."""
    volume = image_like(np.random.default_rng(6), (6, 32, 32))
    reads = []

    def read_slices(indices):
        reads.extend(int(i) for i in indices)
        return volume[indices]

    scores, _, _ = ensemble_slices(read_slices, 6, range(6), members)
    assert sorted(reads) == list(range(6))
    direct = [ensemble_slices(lambda z: volume[z], 6, range(6), [m])[0] for m in members]
    np.testing.assert_allclose(scores, (direct[0] + direct[1]) / 2, atol=1e-6)
    indices = neighbour_slices(0, 3, 6)  # [1, 0, 1]
    assert np.array_equal(cached_stack(read_slices, indices, {}), volume[indices])


def test_region_scores_of_an_ensemble_average_the_members(members):
    rng = np.random.default_rng(5)
    crops = np.stack([image_like(rng, (5, 88, 88)) for _ in range(3)])  # margins 40 and 2
    table = pd.DataFrame({"z": [1, 2, 3], "y": 0, "x": 0, "height": 8, "width": 8})
    regions = RegionSet("D", crops, np.zeros((3, 8, 8), np.uint8), table, 40, 2)
    both, _, _ = ensemble_regions(regions, members, margin=2)
    singles = [ensemble_regions(regions, [m], margin=2)[0] for m in members]
    assert both.shape == (3, 12, 12)
    np.testing.assert_allclose(both, (singles[0] + singles[1]) / 2, atol=1e-6)


def write_run(directory, n_xy, n_z, seed, val_losses):
    run = directory / f"nxy{n_xy}_nz{n_z}/seed{seed}"
    run.mkdir(parents=True)
    pd.DataFrame(
        {
            "epoch": range(len(val_losses)),
            "val_loss": val_losses,
            "val_accuracy": 0.5,
            "val_mIoU": 0.5,
        }
    ).to_csv(run / "history.csv", index=False)
    params = {"n_xy": n_xy, "n_z": n_z, "seed": seed, "train_seconds_total": 1.0}
    (run / "params.json").write_text(json.dumps(params))
    return str(run)


def test_top_runs_are_the_lowest_validation_losses_over_all_cells(tmp_path):
    runs = [
        write_run(tmp_path, 81, 1, 0, [0.5, 0.30]),  # best epoch 0.30
        write_run(tmp_path, 81, 1, 1, [0.2, 0.40]),  # 0.20: the best run
        write_run(tmp_path, 81, 3, 0, [0.6, 0.25]),  # 0.25
        write_run(tmp_path, 81, 3, 1, [0.9, 0.80]),  # 0.80
    ]
    assert top_runs(collect_histories(runs), 3) == [runs[1], runs[2], runs[0]]
    cells, best, ensemble = select_model(runs, 1)
    assert ensemble == [best["run_dir"]] == [runs[1]]
    assert select_model(runs, 4)[2] == [runs[1], runs[2], runs[0], runs[3]]


def test_score_chunk_writes_what_the_ensemble_scores_slice_by_slice(members, tmp_path):
    """Rule predict_slices' job (score_chunk) on slices 1-3 of a 5-slice HDF5 volume: the
    chunk holds exactly ensemble_slices' scores and uncertainty, LZF-compressed one slice per
    chunk, with the slice range and the uncertainty's kind; rule stitch reads it."""
    volume = image_like(np.random.default_rng(7), (5, 40, 36))
    write_h5(tmp_path / "preprocessed.h5", {"volume": volume})
    paths = []
    for member in members:
        paths.append(str(tmp_path / f"{member.path}.keras"))
        member.model.save(paths[-1])
    score_chunk(
        str(tmp_path / "preprocessed.h5"),
        "D",
        paths,
        (1, 4),
        DENSE,
        1,
        False,
        str(tmp_path / "chunk.h5"),
    )
    expected = ensemble_slices(lambda z: volume[z], 5, range(1, 4), members)
    with h5py.File(tmp_path / "chunk.h5", "r") as handle:
        for name, array in zip(("scores", "uncertainty"), expected[:2], strict=True):
            np.testing.assert_allclose(handle[name][:], array, atol=1e-6)
            assert handle[name].compression == "lzf" and handle[name].chunks == (1, 40, 36)
        assert dict(handle.attrs) == {"first_slice": 1, "stop_slice": 4, "uncertainty": SPREAD}
