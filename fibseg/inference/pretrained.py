"""A model trained elsewhere (config key `pretrained`: a bundle, or a model file and its
post-processing): what it replaces and the checks that run when the workflow loads. Imports no
TensorFlow: the model itself is checked when it is loaded (`fibseg.inference.infer.load_model`,
rule check_model)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..io.errors import InputError
from ..training.initial import FIX as INIT_FIX
from ..training.initial import SCRATCH
from .bundle import (
    MODEL_SUFFIX,
    UNSAFE_FORMAT,
    VOXEL_SIZE_TOLERANCE,
    Bundle,
    bundle_folder,
    check_voxel_size,
    read_bundle,
)

POSTPROCESS_KEYS = ("sigma", "threshold", "min_object_voxels")


@dataclass(frozen=True)
class Pretrained:
    """The model file(s), best first (their scores are averaged), and the post-processing
    (`postprocess.json` of an earlier run; None: optimise it here on validation regions); from
    a bundle, also the bundle (its engine, the training data's voxel size) and how far a
    volume's voxel size may stray from the training data's."""

    models: tuple[str, ...]
    postprocess: str | None = None
    bundle: Bundle | None = None
    voxel_size_tolerance: float = VOXEL_SIZE_TOLERANCE
    allow_voxel_size_mismatch: bool = False

    @classmethod
    def from_config(cls, config: dict) -> Pretrained | None:
        """None when the config key `pretrained` is unset (train and select as usual). A
        bundle is read (and its files checked) here."""
        section = config.get("pretrained") or {}
        model, bundle = section.get("model"), section.get("bundle")
        if model and bundle or bundle and section.get("postprocess"):
            raise InputError(
                "sets both 'bundle' and 'model' or 'postprocess'.",
                file="config: pretrained",
                fix="give either pretrained.bundle (a folder that fibseg export-model wrote) "
                "or pretrained.model and pretrained.postprocess, not both.",
            )
        if bundle:
            found = read_bundle(bundle)
            return cls(
                found.models,
                found.postprocess,
                found,
                section.get("voxel_size_tolerance", VOXEL_SIZE_TOLERANCE),
                section.get("allow_voxel_size_mismatch", False),
            )
        if not model:
            if section.get("postprocess"):
                raise InputError(
                    "sets 'postprocess' but no 'model'.",
                    file="config: pretrained",
                    fix="add pretrained.model: the .keras file of the model to use (or "
                    "pretrained.bundle), or remove the pretrained key to train one.",
                )
            return None
        models = (model,) if isinstance(model, str) else tuple(model)
        found = cls(models, section.get("postprocess") or None)
        check_formats(found)
        return found

    def check_voxel_size(self, voxel: tuple[float, float, float], dataset: str) -> None:
        """A bundle's model segments only volumes of about its training data's voxel size
        (`fibseg.inference.bundle.check_voxel_size`); the two-file form is not checked."""
        if self.bundle is not None:
            check_voxel_size(
                self.bundle,
                voxel,
                dataset,
                self.voxel_size_tolerance,
                self.allow_voxel_size_mismatch,
            )


def check_model_format(path: str) -> None:
    """A model from outside the run is a `.keras` file, which Keras loads in safe mode; an
    InputError that names the file otherwise, before a byte of it is read."""
    if Path(str(path)).suffix != MODEL_SUFFIX:
        raise InputError(
            f"the model is not a {MODEL_SUFFIX} file. {UNSAFE_FORMAT}",
            file=str(path),
            fix="give the .keras file of a fibseg run (its results/model/best.keras) as "
            "pretrained.model, or a bundle that `fibseg export-model` wrote. A random forest "
            "(.joblib) is not reused across runs: each run trains its own (forest.enabled).",
        )


def check_formats(pretrained: Pretrained) -> None:
    """The model files are `.keras` files and the post-processing a `.json` file, judged by
    their names alone."""
    for path in pretrained.models:
        check_model_format(path)
    if pretrained.postprocess is not None and Path(pretrained.postprocess).suffix != ".json":
        raise InputError(
            "the post-processing (config key pretrained.postprocess) is not a .json file.",
            file=pretrained.postprocess,
            fix="point pretrained.postprocess at the results/postprocess.json of the run that "
            "trained the model.",
        )


def check_pretrained(pretrained: Pretrained) -> None:
    """The files are a `.keras` model (nothing that can run code when it is read) and a
    `.json` post-processing, and exist; the post-processing names sigma, threshold and
    min_object_voxels."""
    check_formats(pretrained)
    for path in pretrained.models:
        if not Path(path).is_file():
            raise InputError(
                "the model file does not exist (config key pretrained.model).",
                file=path,
                fix="point pretrained.model at the .keras file of an earlier run (e.g. its "
                "results/model/best.keras; paths are relative to the working directory), "
                "or remove the pretrained key to train a model.",
            )
    if pretrained.postprocess is None:
        return
    path = pretrained.postprocess
    if not Path(path).is_file():
        raise InputError(
            "the post-processing file does not exist (config key pretrained.postprocess).",
            file=path,
            fix="point pretrained.postprocess at the results/postprocess.json of the run that "
            "trained the model, or remove it to choose sigma and T on the validation regions "
            "of the annotated data sets.",
        )
    try:
        settings = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as error:
        settings, problem = None, f"is not JSON ({error})."
    else:
        missing = [
            key for key in POSTPROCESS_KEYS if not isinstance(settings, dict) or key not in settings
        ]
        problem = f"lacks {', '.join(missing)}." if missing else None
    if problem:
        raise InputError(
            f"the post-processing (config key pretrained.postprocess) {problem}",
            file=path,
            fix="use the results/postprocess.json that fibseg wrote, with sigma, threshold "
            "and min_object_voxels.",
        )


def check_annotations_needed(
    annotated: list[str], pretrained: Pretrained | None, sheet_path: str
) -> None:
    """Training, and choosing the post-processing, need annotated regions."""
    if annotated:
        return
    if pretrained is None:
        raise InputError(
            "no data set has regions and labels, and no model is given: there is nothing to "
            "train on.",
            file=sheet_path,
            fix="annotate at least one data set (its 'regions' and 'labels' columns), or "
            "set pretrained.model (and pretrained.postprocess) to segment with a model "
            "trained before.",
        )
    if pretrained.postprocess is None:
        raise InputError(
            "pretrained.postprocess is not set and no data set has regions and labels to "
            "choose sigma and T on.",
            file=sheet_path,
            fix="set pretrained.postprocess to the results/postprocess.json of the run that "
            "trained the model, or annotate a data set.",
        )


def init_model_file(init: str) -> str | None:
    """The `.keras` file a run starts from: None from scratch, a bundle's best model (`prior`:
    the shipped prior's), or the file itself; an InputError naming the path where it is neither."""
    if init == SCRATCH:
        return None
    path = bundle_folder(init)
    if path.is_dir():
        return read_bundle(path).models[0]
    if not path.is_file():
        raise InputError(
            "training.init names neither a bundle folder nor a model file.",
            file=init,
            fix=INIT_FIX,
        )
    check_model_format(init)
    return init
