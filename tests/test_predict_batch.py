"""`fibseg predict` for batches and in three formats: several volumes in one call (INPUT... -o
DIR, --batch FOLDER) segmented as one call each would segment them, the model loaded once, a
bad volume named while the others are written (exit code 2); the segmentation as .tif, .h5
(0 = pore, 1 = solid) and .ome.zarr (labels 1 = pore, 2 = solid); and the usage errors. A
tiny untrained U-Net bundle and volumes of 3 slices of 64 x 64 keep it fast."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from helpers import imwrite, read_napari_store
from scipy import ndimage as ndi

import fibseg.pipeline.predict as predict
from fibseg.cli import main
from fibseg.inference.bundle import METADATA, describe_model, export_bundle
from fibseg.io.errors import InputError
from fibseg.pipeline.batch import batch_jobs, folder_volumes, volume_stem
from fibseg.pipeline.predict import PredictOutputs
from fibseg.runtime.settings import InferenceSettings

VOXEL = ["--voxel-size", "50,10,10"]
POSTPROCESS = {"sigma": 1.0, "threshold": 0.5, "min_object_voxels": 10}


def make_bundle(folder: Path, model) -> Path:
    """A bundle of one model, described as a run would describe it (trained at 50 x 10 x 10)."""
    results = folder / "results"
    (results / "model").mkdir(parents=True)
    model.save(results / "model" / "best.keras")
    (results / "postprocess.json").write_text(json.dumps(POSTPROCESS))
    description = describe_model(
        {"best.keras": str(results / "model" / "best.keras")},
        {"n_xy": 64, "n_z": 1, "seed": 0, "run_dir": "results/train/x", "ensemble": []},
        str(results / "postprocess.json"),
        [{"name": "A", "voxel_size_nm": [50.0, 10.0, 10.0]}],
        asdict(InferenceSettings()),
        {"method": "joint"},
        [{"file": "best.keras", "n_xy": 64, "n_z": 1, "padding": "unet"}],
        {"keras": "3"},
    )
    (results / "model" / METADATA).write_text(json.dumps(description))
    return export_bundle(results, folder / "bundle").path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from fibseg.networks.unet import build_unet

    return make_bundle(tmp_path_factory.mktemp("unet"), build_unet(1, seed=0))


def film(seed: int) -> np.ndarray:
    """3 slices of 64 x 64: bright solid grains in a dark pore phase, with noise."""
    rng = np.random.default_rng(seed)
    solid = ndi.gaussian_filter(rng.random((3, 64, 64)), (0, 3, 3)) > 0.5
    noisy = np.where(solid, 170, 70) + rng.normal(0, 10, solid.shape)
    return noisy.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> Path:
    """Volumes a.tif and b.tif and a folder c/ of 2-D TIFF slices (a third volume)."""
    folder = tmp_path_factory.mktemp("films")
    imwrite(folder / "a.tif", film(1))
    imwrite(folder / "b.tif", film(2))
    (folder / "c").mkdir()
    for z, image in enumerate(film(3)):
        tifffile.imwrite(folder / "c" / f"c_{z:03d}.tif", image, photometric="minisblack")
    return folder


@pytest.fixture(autouse=True)
def here(tmp_path, monkeypatch) -> Path:
    """A fresh working directory; the backend's threads left as they are: building the bundle
    in this process started TensorFlow, which then refuses a new thread count (`fibseg
    predict` itself sets it before TensorFlow starts, and to the same count each volume)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(predict, "configure_threads", lambda threads: None)
    return tmp_path


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """The model files loaded, one entry per load."""
    loaded, load = [], predict.load_member

    def counted(path, *args, **kwargs):
        loaded.append(Path(path).name)
        return load(path, *args, **kwargs)

    monkeypatch.setattr(predict, "load_member", counted)
    return loaded


def fibseg(capsys, *args) -> tuple[int, list[dict], str]:
    """`fibseg ARGS` in this process: exit code, the JSON lines on stdout, stderr."""
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    return code, lines, captured.err


def hidden(folder: Path) -> list[str]:
    return [path.name for path in folder.iterdir() if path.name.startswith(".")]


def test_a_batch_segments_each_volume_as_one_call_would_with_one_load(bundle, films, capsys, loads):
    inputs = [films / "a.tif", films / "b.tif", films / "c"]
    code, lines, err = fibseg(capsys, "predict", bundle, *inputs, "-o", "out", *VOXEL)
    assert code == 0, err
    assert loads == ["best.keras"]  # once for the batch
    assert [line["input"] for line in lines] == [str(path) for path in inputs]
    assert [line["labels"] for line in lines] == ["0 = pore, 1 = solid"] * 3
    written = sorted(p.name for p in Path("out").iterdir())
    assert written == ["a_segmentation.tif", "b_segmentation.tif", "c_segmentation.tif"]
    for name in ("a", "b", "c"):
        assert f"{name}_segmentation.tif" in err and "segmented, porosity" in err
    assert "3 volume(s) segmented into out" in err

    loads.clear()
    for path, name in zip(inputs, "abc", strict=True):
        code, (single,), err = fibseg(capsys, "predict", bundle, path, f"{name}.tif", *VOXEL)
        assert code == 0, err
        batch = tifffile.imread(f"out/{name}_segmentation.tif")
        np.testing.assert_array_equal(batch, tifffile.imread(f"{name}.tif"))
        assert batch.dtype == np.uint8 and 0 < batch.mean() < 1
        assert single["porosity"] == pytest.approx(1 - batch.mean())
    assert loads == ["best.keras"] * 3  # one call, one volume, one load


def test_h5_and_ome_zarr_hold_the_same_segmentation_with_their_labels(bundle, films, capsys):
    code, _, err = fibseg(capsys, "predict", bundle, films / "a.tif", "a.tif", *VOXEL)
    assert code == 0, err
    reference = tifffile.imread("a.tif")  # 0 = pore, 1 = solid
    assert set(np.unique(reference)) == {0, 1}

    code, (line,), err = fibseg(capsys, "predict", bundle, films / "a.tif", "a.h5", *VOXEL)
    assert code == 0 and line["labels"] == "0 = pore, 1 = solid", err
    with h5py.File("a.h5", "r") as handle:
        segmentation = handle["segmentation"]
        assert segmentation.dtype == np.uint8
        np.testing.assert_array_equal(segmentation[:], reference)
        assert list(segmentation.attrs["element_size_um"]) == pytest.approx([0.05, 0.01, 0.01])
        assert "axistags" in segmentation.attrs
        assert list(handle.attrs["voxel_size_nm_zyx"]) == [50.0, 10.0, 10.0]

    args = ("-o", "zarr", "--format", "ome.zarr", *VOXEL)
    code, (line,), err = fibseg(capsys, "predict", bundle, films / "a.tif", *args)
    assert code == 0 and line["labels"] == "labels 1 = pore, 2 = solid", err
    store = Path("zarr/a_segmentation.ome.zarr")
    assert line["segmentation"] == str(store) and not hidden(Path("zarr"))
    import zarr

    label_image = zarr.open_group(str(store), mode="r")["labels/segmentation"]
    full = label_image.attrs["multiscales"][0]["datasets"][0]["path"]  # full resolution
    labels = np.asarray(label_image[full])
    np.testing.assert_array_equal(labels, reference + 1)  # 1 = pore, 2 = solid
    napari = read_napari_store(store)  # as napari opens it
    np.testing.assert_array_equal(napari["labels"], reference + 1)
    assert sorted(napari["channels"]) == ["EM", "scores", "uncertainty"]
    assert napari["labels_scale"] == pytest.approx([0.05, 0.01, 0.01])


def test_a_bad_volume_is_named_and_the_others_are_written(bundle, films, capsys, loads, here):
    batch = here / "batch"
    batch.mkdir()
    (batch / "a.tif").write_bytes((films / "a.tif").read_bytes())
    (batch / "0_broken.tif").write_bytes(b"half a TIFF")  # first: it fails before any load
    (batch / "c").mkdir()
    for path in (films / "c").iterdir():
        (batch / "c" / path.name).write_bytes(path.read_bytes())
    (batch / "notes.txt").write_text("not a volume")

    code, lines, err = fibseg(capsys, "predict", bundle, "--batch", batch, "-o", "out", *VOXEL)
    assert code == 2
    assert loads == ["best.keras"]
    assert sorted(p.name for p in Path("out").iterdir()) == [
        "a_segmentation.tif",
        "c_segmentation.tif",
    ]
    assert [Path(line["input"]).name for line in lines] == ["0_broken.tif", "a.tif", "c"]
    assert "cannot be read" in lines[0]["error"] and "porosity" in lines[1]
    failures = err[err.index("fibseg predict: error:") :]
    assert failures.startswith("fibseg predict: error: 1 of 3 volumes failed; the other 2 are")
    assert f"- {batch / '0_broken.tif'}: data set '0_broken.tif'" in failures
    assert "Fix:" in failures and "Traceback" not in err
    assert tifffile.imread("out/a_segmentation.tif").shape == film(1).shape


def test_a_model_that_does_not_load_ends_the_batch(films, capsys, loads, here):
    import keras

    source = keras.Input((None, None, 1))
    scaled = keras.layers.Lambda(lambda t: t * 2.0)(source)  # safe mode refuses it
    model = keras.Model(source, keras.layers.Conv2D(1, 1, activation="sigmoid")(scaled))
    unsafe = make_bundle(here / "unsafe", model)
    inputs = [films / "a.tif", films / "b.tif"]
    code, lines, err = fibseg(capsys, "predict", unsafe, *inputs, "-o", "out", *VOXEL)
    assert code == 2 and loads == ["best.keras"] and not lines  # tried once, for a.tif
    assert f"file '{unsafe / 'best.keras'}'" in err and "safe mode refuses" in err
    assert not Path("out").exists() or not list(Path("out").iterdir())


# --- no model loaded: names, folders and usage -------------------------------------------------


def test_output_names_and_folders_of_volumes(here):
    assert [
        volume_stem(spec)
        for spec in ("a/film.tif", "film.TIFF", "f.h5:/raw", "f.hdf5", "s.zarr", "s.ome.zarr")
    ] == ["film", "film", "f", "f", "s", "s"]
    assert volume_stem("stack/") == "stack" and volume_stem("stack/*.tif") == "stack"
    folder = here / "films"
    (folder / "slices").mkdir(parents=True)
    (folder / "slices" / "z_000.tif").write_bytes(b"")
    (folder / "store.zarr").mkdir()
    (folder / "empty").mkdir()
    (folder / "out").mkdir()
    (folder / "out" / "x_segmentation.tif").write_bytes(b"")
    for name in ("a.tif", "b.h5", "c.mrc", "notes.txt", ".hidden.tif"):
        (folder / name).write_bytes(b"")
    found = [Path(path).name for path in folder_volumes(folder, folder / "out")]
    assert found == ["a.tif", "b.h5", "c.mrc", "slices", "store.zarr"]
    jobs = batch_jobs(["x/a.tif", "y/b.h5:/raw"], Path("o"), "h5")
    assert jobs == [
        ("x/a.tif", PredictOutputs(Path("o/a_segmentation.h5"))),
        ("y/b.h5:/raw", PredictOutputs(Path("o/b_segmentation.h5"))),
    ]
    with pytest.raises(InputError, match=r"'x/a.tif' and 'y/a.tif' would both be written"):
        batch_jobs(["x/a.tif", "y/a.tif"], Path("o"), "tif")
    with pytest.raises(InputError, match=r"holds no volume.*Fix:"):
        folder_volumes(folder / "empty")
    with pytest.raises(InputError, match=r"also the output folder"):
        folder_volumes(folder, folder)
    with pytest.raises(InputError, match=r"does not exist"):
        folder_volumes(folder / "missing")


def test_an_unknown_output_ending_lists_the_accepted_ones(bundle, capsys):
    imwrite(Path("vol.tif"), film(1))
    code, _, err = fibseg(capsys, "predict", bundle, "vol.tif", "seg.zarr", *VOXEL)
    assert code == 2 and "file 'seg.zarr': the output is not a TIFF, HDF5 or OME-Zarr" in err
    for accepted in (".tif or .tiff", "0 = pore, 1 = solid", ".h5", ".ome.zarr", "1 = pore, 2"):
        assert accepted in err
    for name in ("seg.TIF", "seg.tiff", "seg.hdf5", "seg.OME.ZARR"):
        PredictOutputs(Path(name)).check(False)
    PredictOutputs(Path("s.tif"), Path("scores.h5"), Path("aligned.tif")).check(False)
    with pytest.raises(InputError, match="named twice"):
        PredictOutputs(Path("s.h5"), scores=Path("s.h5")).check(False)


@pytest.mark.parametrize(
    "args, message",
    [
        (["a.tif"], "required: OUTPUT (or INPUT... -o DIR)"),
        (["a.tif", "b.tif", "c.tif"], "3 paths after BUNDLE"),
        (["--batch", "films"], "--batch needs -o/--output-dir DIR"),
        (["a.tif", "a_seg.tif", "--format", "h5"], "--format goes with -o"),
        (["a.tif", "-o", "out", "--scores", "s.h5"], "--scores and --write-aligned name one"),
        (["-o", "out"], "required: INPUT... or --batch FOLDER"),
    ],
)
def test_a_mix_of_the_two_forms_is_a_usage_error(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "bundle", *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "usage: fibseg predict" in err


def test_batch_folders_are_checked_before_any_work(bundle, films, capsys, here):
    (here / "empty").mkdir()
    code, _, err = fibseg(capsys, "predict", bundle, "--batch", "empty", "-o", "out")
    assert code == 2 and "file 'empty': the --batch folder holds no volume" in err
    code, _, err = fibseg(capsys, "predict", bundle, "--batch", films, "-o", films)
    assert code == 2 and "also the output folder" in err
    code, _, err = fibseg(capsys, "predict", bundle, films / "a.tif", "x/a.tif", "-o", "out")
    assert code == 2 and "would both be written to 'out/a_segmentation.tif'" in err
    Path("file").write_text("")
    code, _, err = fibseg(capsys, "predict", bundle, films / "a.tif", "-o", "file")
    assert code == 2 and "the output folder (-o) is a file" in err
    assert not Path("out").exists()


def test_the_help_states_each_formats_labels(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "hold uint8 0 = pore, 1 = solid" in text and "label image 1 = pore, 2 = solid" in text
    assert "--batch FOLDER" in text and "--format" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["B", "--aligned", "in.tif", "out.tif"],
        ["B", "in.tif", "--aligned", "out.tif"],
        ["B", "in.tif", "out.tif", "--aligned"],
    ],
)
def test_predict_takes_its_paths_around_its_options(argv):
    from fibseg.cli import build_parser, parse

    args = parse(build_parser(), ["predict", *argv])
    assert args.bundle == "B" and args.paths == ["in.tif", "out.tif"] and args.aligned


def test_predict_batch_paths_after_the_output_dir_and_unknown_options():
    from fibseg.cli import build_parser, parse

    args = parse(build_parser(), ["predict", "B", "-o", "D", "a.tif", "b.tif"])
    assert args.paths == ["a.tif", "b.tif"] and str(args.output_dir) == "D"
    with pytest.raises(SystemExit):
        parse(build_parser(), ["predict", "B", "a.tif", "--no-such-option"])
