"""A model bundle: one folder with the model file(s), the post-processing and `fibseg-model.json`
(what the model is, how its input was prepared, the data it was trained on). Rule describe_model
writes the description of a run (`results/model/fibseg-model.json`), `fibseg export-model`
copies it with the files into a folder, and `pretrained: {bundle: PATH}`, `training.init` and
`fibseg predict` read that folder. The keyword `prior` names the FIB-SEM prior that ships with
fibseg (`fibseg make-prior`'s default recipe, docs/prior.md). Imports no TensorFlow."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

from ..io.atomic import atomic_directory
from ..io.digest import file_digest
from ..io.errors import InputError
from ..runtime.job import package_versions
from ..runtime.settings import InferenceSettings

METADATA = "fibseg-model.json"
FORMAT, FORMAT_VERSION = "fibseg-model", 1
POSTPROCESS = "postprocess.json"
# A new volume's voxel size may differ from the training data's by this fraction per axis
# (config key pretrained.voxel_size_tolerance), unless pretrained.allow_voxel_size_mismatch.
VOXEL_SIZE_TOLERANCE = 0.10
# The inference settings a bundle fixes: the engine its post-processing was chosen on, and the
# dtype its scores were stored in. Tiles, batches and slices per job stay the config's.
BUNDLE_INFERENCE_KEYS = ("engine", "allow_approximate_dense", "score_dtype")
INTENSITY = (
    "each slice divided by its dtype's maximum (integer volumes) to [0, 1], the straight line "
    "fitted through the x column means subtracted and its mean added back, clipped to [0, 1] "
    "(fibseg.preprocess.gradient, paper section 3.1)"
)
REQUIRED = ("format", "format_version", "models", "postprocess", "inference", "training_data")
# The one model format read from outside the run: a Keras 3 zip, loaded in safe mode
# (fibseg.inference.infer.load_model). A pickle (.joblib, .pkl) runs any code it holds when it
# is read, and other formats (.h5) may run code too.
MODEL_SUFFIX = ".keras"
UNSAFE_FORMAT = (
    "fibseg reads a model from outside the run only as a .keras file, loaded in Keras safe "
    "mode: a pickled file (.joblib, .pkl) can run any code when it is read, and so can other "
    "formats (.h5)."
)
# The FIB-SEM prior that ships in the package, named `prior` wherever a bundle is read.
PRIOR = "prior"
PRIOR_FOLDER = Path(__file__).with_name("prior_bundle")
# A file a bundle lists: a plain name in the bundle folder itself (no path, no '..', no leading
# dot), so that reading the bundle reads nothing else.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


@dataclass(frozen=True)
class Bundle:
    """A bundle folder and its description (`fibseg-model.json`)."""

    path: Path
    metadata: dict

    @property
    def models(self) -> tuple[str, ...]:
        """The model files, best first (their scores are averaged)."""
        return tuple(str(self.path / name) for name in self.metadata["models"])

    @property
    def postprocess(self) -> str:
        return str(self.path / self.metadata["postprocess"])

    @property
    def training_voxel_sizes(self) -> dict[str, tuple[float, float, float]]:
        """(z, y, x) nm of each data set the model was trained on."""
        return {
            str(entry["name"]): tuple(float(v) for v in entry["voxel_size_nm"])
            for entry in self.metadata["training_data"]
        }

    def inference(self, base: InferenceSettings) -> InferenceSettings:
        """`base` (the config's) with the engine and score dtype the bundle was made with."""
        recorded = self.metadata["inference"]
        return replace(base, **{k: recorded[k] for k in BUNDLE_INFERENCE_KEYS if k in recorded})


def bundle_error(path: Path, problem: str) -> InputError:
    return InputError(
        problem,
        file=str(path),
        fix="point pretrained.bundle (or fibseg predict's BUNDLE) at a folder that "
        "`fibseg export-model RESULTS_DIR BUNDLE` wrote, with fibseg-model.json, the .keras "
        "file(s) and postprocess.json, or name the shipped FIB-SEM prior: prior.",
    )


def bundle_folder(path: str | Path) -> Path:
    """The folder a bundle's name means: the shipped prior for `prior`, else the path."""
    return PRIOR_FOLDER if str(path) == PRIOR else Path(path)


def read_bundle(path: str | Path) -> Bundle:
    """The bundle in folder `path` (`prior`: the shipped prior); an InputError that names the
    file when it is missing, incomplete or not a fibseg bundle, or lists a file that is not a
    plain `.keras` (model) or `.json` (post-processing) name inside the folder: refused before
    any byte of it is read."""
    folder = bundle_folder(path)
    if not folder.is_dir():
        raise bundle_error(folder, "the model bundle folder does not exist.")
    described = folder / METADATA
    if not described.is_file():
        raise bundle_error(folder, f"the folder holds no {METADATA}: it is not a model bundle.")
    try:
        metadata = json.loads(described.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise bundle_error(described, f"is not JSON ({error}).") from None
    missing = [key for key in REQUIRED if not isinstance(metadata, dict) or key not in metadata]
    if missing or metadata.get("format") != FORMAT:
        raise bundle_error(described, f"is not a fibseg model description (lacks {missing}).")
    if metadata["format_version"] > FORMAT_VERSION:
        raise InputError(
            f"the bundle has format version {metadata['format_version']}; this fibseg reads "
            f"up to {FORMAT_VERSION}.",
            file=str(described),
            fix="update fibseg to the version that wrote the bundle (its 'versions').",
        )
    names = bundle_files(folder, described, metadata)  # before any byte of them is read
    for name in names:
        if not (folder / name).is_file():
            raise bundle_error(folder / name, f"the bundle's file '{name}' is missing.")
        digests = metadata.get("sha256")
        expected = digests.get(name) if isinstance(digests, dict) else None
        if expected and file_digest(folder / name) != expected:
            raise bundle_error(
                folder / name,
                f"the file is not the one {METADATA} describes (its SHA-256 differs): it was "
                "changed or copied incompletely.",
            )
    return Bundle(folder, metadata)


def bundle_files(folder: Path, described: Path, metadata: dict) -> list[str]:
    """The model and post-processing files the description lists, once each is known to be a
    plain `.keras` (models) or `.json` (post-processing) file name inside `folder`, reached
    through no link that leads out of it; an InputError that names the file and why not.
    Nothing but the folder's directory entries is read."""
    models = metadata["models"]
    if not isinstance(models, list) or not models:
        raise bundle_error(described, "lists no model files ('models' is no list of names).")
    listed = [(name, "model", MODEL_SUFFIX) for name in models]
    listed.append((metadata["postprocess"], "post-processing", ".json"))
    for name, role, suffix in listed:
        problem = unsafe_name(folder, name, suffix)
        if problem:
            raise InputError(
                f"the bundle folder '{folder}' lists the {role} file {name!r}, which {problem}",
                file=str(described),
                fix="use a bundle that `fibseg export-model RESULTS_DIR BUNDLE` wrote, with "
                f"{METADATA} as it wrote it: it lists only .keras files and postprocess.json "
                "lying in the bundle folder itself.",
            )
    return [name for name, _, _ in listed]


def unsafe_name(folder: Path, name: object, suffix: str) -> str | None:
    """Why `name` is not a plain file name ending in `suffix` inside `folder`, or None. A link
    is followed by its path alone: the file is not opened."""
    if not isinstance(name, str):
        return f"is not a file name but a {type(name).__name__}."
    if "/" in name or "\\" in name or Path(name).is_absolute():
        return "is a path, not a plain file name: a bundle's files lie in its folder itself."
    if ".." in name:
        return "holds '..', which may lead out of the bundle folder."
    if not PLAIN_NAME.fullmatch(name):
        return (
            "is not a plain file name (letters, digits, '_', '-', '+' and '.', not starting "
            "with '.')."
        )
    if Path(name).suffix != suffix:
        return f"is not a {suffix} file." + (f" {UNSAFE_FORMAT}" if suffix == MODEL_SUFFIX else "")
    inside = folder.resolve()
    target = (folder / name).resolve()
    if not target.is_relative_to(inside):
        return f"is a link to '{target}', outside the bundle folder."
    return None


def format_nm(voxel: tuple[float, ...]) -> str:
    return " x ".join(f"{v:g}" for v in voxel) + " nm"


def check_voxel_size(
    bundle: Bundle,
    voxel: tuple[float, float, float],
    dataset: str,
    tolerance: float = VOXEL_SIZE_TOLERANCE,
    allow_mismatch: bool = False,
) -> None:
    """A volume's (z, y, x) voxel size lies within `tolerance` (a fraction, per axis) of the
    voxel size of at least one data set the model was trained on."""
    trained = bundle.training_voxel_sizes
    if allow_mismatch or not trained:
        return
    deviation = {
        name: max(abs(new - old) / old for new, old in zip(voxel, size, strict=True))
        for name, size in trained.items()
    }
    closest = min(deviation, key=deviation.get)
    if deviation[closest] <= tolerance + 1e-9:
        return
    sizes = "; ".join(f"{name}: {format_nm(size)}" for name, size in trained.items())
    raise InputError(
        f"its voxel size (z, y, x) {format_nm(voxel)} differs from that of the data the model "
        f"was trained on ({sizes}) by {deviation[closest]:.0%} on some axis, more than the "
        f"tolerance of {tolerance:.0%} (pretrained.voxel_size_tolerance): the structures would "
        "look bigger or smaller to the network than in training.",
        dataset=dataset,
        file=str(bundle.path / METADATA),
        fix=f"resample the volume to {format_nm(trained[closest])}; or, if its metadata is "
        "wrong, give the right voxel size (the sheet's voxel_size_nm column, or fibseg predict "
        "--voxel-size z,y,x); or segment it anyway with pretrained.allow_voxel_size_mismatch: "
        "true (fibseg predict --allow-voxel-size-mismatch).",
    )


def training_data_entry(
    name: str,
    voxel: list[float],
    checked: str | None = None,
    preprocessed: str | None = None,
) -> dict:
    """What the description records of one training data set: its voxel size, and from its
    rule check_dataset summary and preprocessed volume its shape, dtype and gradient fit (none
    of them for a published data set, which has no volume)."""
    import h5py

    entry: dict = {"name": name, "voxel_size_nm": [float(v) for v in voxel]}
    if checked:
        summary = json.loads(Path(checked).read_text())
        entry |= {"shape": summary["shape"], "dtype": summary["dtype"]}
    if preprocessed:
        with h5py.File(preprocessed, "r") as handle:
            keys = ("slope_per_px", "intercept", "line_mean", "clipped_voxels")
            entry["gradient"] = {k: handle.attrs[k].item() for k in keys if k in handle.attrs}
    return entry


def describe_model(
    models: dict[str, str],
    best: dict,
    postprocess: str,
    training_data: list[dict],
    inference: dict,
    align: dict,
    architectures: list[dict],
    training_versions: dict,
    training_init: dict | str = "scratch",
) -> dict:
    """The description of a run's selected model(s) (rule describe_model): `models` maps each
    file name (best first) to its path; the post-processing's path is `postprocess`; then the
    geometry, engine, preprocessing, training data, where the training started
    (`training_init`: scratch, or the model file and SHA-256 of training.init), versions and
    every file's SHA-256."""
    known = {f.name for f in fields(InferenceSettings)}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "models": list(models),
        "sha256": {
            **{name: file_digest(Path(path)) for name, path in models.items()},
            POSTPROCESS: file_digest(Path(postprocess)),
        },
        "postprocess": POSTPROCESS,
        "architecture": architectures,
        "selected": {k: v for k, v in best.items() if k not in ("run_dir", "ensemble")},
        "inference": {k: v for k, v in inference.items() if k in known},
        "postprocess_settings": json.loads(Path(postprocess).read_text()),
        "preprocessing": {"intensity": INTENSITY, "alignment": align},
        "training_data": training_data,
        "training_init": training_init,
        "versions": {"trained_with": training_versions, "described_with": package_versions()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def export_bundle(results: str | Path, destination: str | Path) -> Bundle:
    """Copy a finished run's description, model file(s) and post-processing from `results`
    (the run's results/ folder) into the new folder `destination`."""
    results, destination = Path(results), Path(destination)
    described = results / "model" / METADATA
    if not results.is_dir():
        raise InputError(
            "the results folder does not exist.",
            file=str(results),
            fix="give the results/ folder of a finished fibseg run.",
        )
    if not described.is_file():
        raise InputError(
            "the run has no model description (rule describe_model).",
            file=str(described),
            fix="finish the run (`fibseg run` with its config, in its working directory), or "
            "build just this file: `fibseg run results/model/fibseg-model.json` there. A run "
            "with `pretrained` trains nothing: export the bundle of the run that trained it.",
        )
    metadata = json.loads(described.read_text())
    sources = [results / "model" / name for name in metadata["models"]]
    sources.append(results / POSTPROCESS)
    for source in sources:
        if not source.is_file():
            raise InputError(
                "a file of the run's selected model is missing.",
                file=str(source),
                fix="finish the run (`fibseg run` with its config, in its working directory).",
            )
        if file_digest(source) != metadata.get("sha256", {}).get(source.name):
            raise InputError(
                f"is not the file that {described} describes: the description is out of date.",
                file=str(source),
                fix="finish the run (`fibseg run` with its config, in its working directory) "
                "so that rule describe_model describes the model it selected.",
            )
    if destination.exists() and any(destination.iterdir()):
        raise InputError(
            "the bundle folder exists and is not empty.",
            file=str(destination),
            fix="give a new folder, or remove this one first.",
        )
    metadata["versions"]["exported_with"] = package_versions()
    metadata["exported_from"] = str(results.resolve())
    with atomic_directory(destination) as tmp:
        for source in sources:
            shutil.copyfile(source, tmp / source.name)
        (tmp / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
    return read_bundle(destination)
