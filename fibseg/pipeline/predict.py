"""Volumes segmented with a model bundle, without a sheet (`fibseg predict`): the steps of
the workflow's `pretrained` route, in-process and in its order, so that the segmentation is the
workflow's voxel for voxel: rule check_dataset's checks, align (config key `align`),
correct_gradient, check_model, predict_slices (chunk by chunk), stitch and postprocess; then
the segmentation as a TIFF or HDF5 file (1 = solid, 0 = pore) or, as rule export_ome_zarr
writes it, an OME-Zarr store (labels 1 = pore, 2 = solid). A batch (`segment_batch`) loads
the model once and goes on past a volume that fails."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import tifffile

from ..evaluation.postprocess import write_segmentation
from ..inference.bundle import Bundle
from ..inference.ensemble import Member, ensemble_slices, load_member
from ..inference.pretrained import Pretrained, check_pretrained
from ..io.atomic import atomic_output
from ..io.errors import InputError
from ..io.formats import (
    H5_SUFFIXES,
    MRC_SUFFIXES,
    TIFF_SUFFIXES,
    ZARR_SUFFIX,
    split_spec,
    volume_format,
)
from ..io.omezarr import write_ome_zarr
from ..io.volume import Volume
from ..io.voxel_size import imagej_calibration
from ..io.writers import stitch_chunks, write_h5
from ..preprocess.alignment import align_volume
from ..preprocess.gradient import correct_gradient
from ..preprocess.registration import check_roi
from ..runtime.job import configure_threads
from ..runtime.settings import AlignSettings, InferenceSettings
from .checks import check_dataset
from .dag import chunk_names, chunk_slices

IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)  # what an ImageJ TIFF stack can hold
# the HDF5 endings fibseg writes (it reads H5_SUFFIXES)
HDF5_SUFFIXES, OME_ZARR_SUFFIX = (".h5", ".hdf5"), ".ome.zarr"
# The segmentation's formats: each one's file name ending (in a batch) and label values
FORMATS = {"tif": ".tif", "h5": ".h5", "ome.zarr": OME_ZARR_SUFFIX}
LABELS = {
    "tif": "0 = pore, 1 = solid",
    "h5": "0 = pore, 1 = solid",
    "ome.zarr": "labels 1 = pore, 2 = solid",
}
ACCEPTED = (
    ".tif or .tiff (multi-page TIFF, 0 = pore, 1 = solid), .h5 or .hdf5 (dataset /segmentation, "
    "0 = pore, 1 = solid) or .ome.zarr (OME-Zarr for napari: the EM, scores and uncertainty, "
    "and labels 1 = pore, 2 = solid)"
)
EXPORT_WORKERS = 2  # slabs the OME-Zarr export reads and writes at a time, as the workflow's


def output_format(path: str | os.PathLike) -> str | None:
    """The segmentation format that a file name asks for (a key of FORMATS), or None."""
    name = Path(path).name.lower()
    if name.endswith(OME_ZARR_SUFFIX):
        return "ome.zarr"
    if name.endswith(TIFF_SUFFIXES):
        return "tif"
    if name.endswith(HDF5_SUFFIXES):
        return "h5"
    return None


@dataclass(frozen=True)
class PredictOutputs:
    """Where `segment_volume` writes: the segmentation (its name's ending picks the format,
    `output_format`), and optionally the scores (HDF5, as results/{ds}/scores.h5) and the
    aligned volume (HDF5 `/volume`, or a TIFF that napari opens; the segmentation's frame:
    correct the segmentation on it, and train on it with `aligned: true`)."""

    segmentation: Path
    scores: Path | None = None
    aligned: Path | None = None

    def check(self, aligned_input: bool) -> None:
        if aligned_input and self.aligned is not None:
            raise InputError(
                "the volume is aligned already (--aligned): there is no aligned copy to write.",
                file=str(self.aligned),
                fix="leave out --write-aligned: the volume itself is in the segmentation's frame.",
            )
        if output_format(self.segmentation) is None:
            raise InputError(
                "the output is not a TIFF, HDF5 or OME-Zarr name: fibseg predict writes "
                f"{ACCEPTED}.",
                file=str(self.segmentation),
                fix="name the output .tif, .h5 or .ome.zarr.",
            )
        if self.scores is not None and self.scores.suffix.lower() not in HDF5_SUFFIXES:
            raise InputError("is not an HDF5 file name.", file=str(self.scores), fix="name it .h5.")
        aligned_suffixes = (*HDF5_SUFFIXES, *TIFF_SUFFIXES)  # save_aligned writes either
        if self.aligned is not None and self.aligned.suffix.lower() not in aligned_suffixes:
            raise InputError(
                "is not an HDF5 or TIFF file name.",
                file=str(self.aligned),
                fix="name it .h5 or .tif.",
            )
        for path in (self.scores, self.aligned):
            if path is not None and path.resolve() == self.segmentation.resolve():
                raise InputError(
                    "is named twice: as the segmentation and as --scores or --write-aligned.",
                    file=str(path),
                    fix="give each output its own name.",
                )


@dataclass
class LoadedModel:
    """The model's members, loaded once for a batch: the first volume that passes its checks
    loads them (after its own cheap checks, as a single volume does) and the next volumes
    reuse them. `tried` without `members`: loading failed, a fault of the bundle rather
    than of a volume."""

    members: list[Member] | None = None
    tried: bool = False


def save_aligned(aligned_h5: Path, destination: Path, voxel: tuple[float, float, float]) -> None:
    """The aligned volume moved to `destination` (.h5), or streamed slice by slice into an
    ImageJ TIFF stack with its voxel size (.tif)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.suffix.lower() in HDF5_SUFFIXES:
        shutil.move(aligned_h5, destination)
        return
    with Volume(f"{aligned_h5}:/volume") as volume, atomic_output(destination) as tmp:
        with tifffile.TiffWriter(tmp, imagej=volume.dtype in IMAGEJ_DTYPES) as tif:
            tif.write(
                (volume.read(z, z + 1)[0] for z in range(len(volume))),
                shape=volume.shape,
                dtype=volume.dtype,
                photometric="minisblack",
                **imagej_calibration(voxel if volume.dtype in IMAGEJ_DTYPES else None),
            )


def volume_voxel_size(
    spec: str, name: str, given: tuple[float, float, float] | None
) -> tuple[float, float, float]:
    """(z, y, x) nm: `given`, else the volume's own metadata, which must give every axis."""
    if given is not None:
        return tuple(float(v) for v in given)
    with Volume(spec, name) as volume:
        found = volume.metadata_voxel_size_nm()
    missing = [axis for axis, value in zip("zyx", found, strict=True) if not value]
    if missing:
        raise InputError(
            f"the volume's metadata gives no voxel size for axis {', '.join(missing)}.",
            dataset=name,
            file=split_spec(spec)[0],
            fix="give it: --voxel-size z,y,x (in nm, e.g. --voxel-size 50,10,10).",
        )
    return tuple(float(v) for v in found)


def preprocess(
    spec: str,
    name: str,
    work: Path,
    voxel: tuple[float, float, float],
    align: AlignSettings | None,
    log: logging.Logger,
) -> Path:
    """Rules align (unless `align` is None: the volume is aligned already) and
    correct_gradient into `work`; returns the preprocessed volume's HDF5 file."""
    source = spec
    if align is not None:
        with Volume(spec, name) as volume:
            try:
                check_roi(align.roi, volume.shape[1:], f"align.roi (volume {volume.spec})")
            except ValueError as error:
                raise InputError(str(error), dataset=name, fix="correct align.roi.") from None
            log.info("aligning %s %s (%s)", spec, volume.shape, align.method)
            alignment = align_volume(volume, work / "aligned.h5", voxel, align)
        log.info("%s", alignment.statement)
        source = f"{work / 'aligned.h5'}:/volume"
    with Volume(source, name) as volume:
        gradient = correct_gradient(volume, work / "preprocessed.h5", voxel)
    log.info("gradient fit: %s", gradient)
    return work / "preprocessed.h5"


def score_chunks(
    preprocessed: Path,
    name: str,
    members: list[Member],
    slices_per_job: int,
    work: Path,
    log: logging.Logger,
) -> list[str]:
    """Rule predict_slices, chunk by chunk as its jobs cut the volume: one score file each
    in `work`, ready for `stitch_chunks`."""
    chunks = []
    with Volume(str(preprocessed), name) as volume:
        depth = volume.shape[0]
        for chunk in chunk_names(depth, slices_per_job):
            first, stop = chunk_slices(chunk, depth, slices_per_job)
            scores, uncertainty, kind = ensemble_slices(
                volume.read_slices, depth, range(first, stop), members, log
            )
            chunks.append(str(work / f"scores_{chunk}.h5"))
            write_h5(
                chunks[-1],
                {"scores": scores, "uncertainty": uncertainty},
                {"first_slice": first, "stop_slice": stop, "uncertainty": kind},
            )
    return chunks


def segment_volume(
    pretrained: Pretrained,
    spec: str,
    outputs: PredictOutputs,
    config: dict,
    voxel_nm: tuple[float, float, float] | None = None,
    aligned: bool = False,
    log: logging.Logger | None = None,
    models: LoadedModel | None = None,
) -> dict:
    """Segment the volume `spec` (any format fibseg reads) with `pretrained` (a bundle) as the
    workflow's `pretrained` route does with `config` (its `align`, `inference`, `postprocess`
    and `resources` sections); `aligned` skips the alignment (the sheet's `aligned: true`).
    `models` keeps the loaded model between the volumes of a batch (`segment_batch`).
    Returns a summary (voxel size, porosity, label values, what was written)."""
    log = log or logging.getLogger("fibseg")
    bundle: Bundle | None = pretrained.bundle
    name = Path(split_spec(spec)[0]).name
    outputs.check(aligned)
    check_pretrained(pretrained)
    voxel = volume_voxel_size(spec, name, voxel_nm)  # the cheap checks first
    pretrained.check_voxel_size(voxel, name)
    summary = check_dataset(name, spec)  # every slice read once: a damaged file fails here
    inference = InferenceSettings.from_config(config["inference"])
    if bundle is not None:
        inference = bundle.inference(inference)
    align = AlignSettings.from_config(config["align"])
    threads = config["resources"]["threads"]
    configure_threads(threads)
    segment = functools.partial(  # the rest of the work, once the model is loaded
        segment_checked,
        spec=spec,
        outputs=outputs,
        config=config,
        voxel=voxel,
        align=None if aligned else align,
        inference=inference,
        postprocess=pretrained.postprocess,
        log=log,
    )
    if models is not None and models.members is not None:  # loaded for an earlier volume
        return {**summary, **segment(members=models.members)}
    models = LoadedModel() if models is None else models
    models.tried = True
    members = [load_member(path, inference, None, threads) for path in pretrained.models]
    models.members = members
    return {**summary, **segment(members=members)}


def segment_checked(
    *,
    spec: str,
    outputs: PredictOutputs,
    config: dict,
    voxel: tuple[float, float, float],
    align: AlignSettings | None,
    inference: InferenceSettings,
    postprocess: str,
    members: list[Member],
    log: logging.Logger,
) -> dict:
    """`segment_volume` once the volume passed its checks and the model is loaded: align
    (unless `align` is None), correct the gradient, score, stitch, post-process with the
    settings in `postprocess`, and write the outputs, each atomically. Returns the volume's
    summary beyond rule check_dataset's."""
    name = Path(split_spec(spec)[0]).name
    settings = json.loads(Path(postprocess).read_text())
    form = output_format(outputs.segmentation)
    outputs.segmentation.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=".fibseg-predict-", dir=outputs.segmentation.parent
    ) as tmp:
        work = Path(tmp)
        preprocessed = preprocess(spec, name, work, voxel, align, log)
        chunks = score_chunks(preprocessed, name, members, inference.slices_per_job, work, log)
        stitch_chunks(chunks, str(work / "scores.h5"), inference.score_dtype, list(voxel))
        with h5py.File(work / "scores.h5", "r") as handle:
            porosity = write_segmentation(
                handle["scores"],
                settings,
                outputs.segmentation if form == "h5" else work / "segmentation.h5",
                outputs.segmentation if form == "tif" else work / "segmentation.tif",
                {**settings, "voxel_size_nm_zyx": list(voxel)},
                config["postprocess"]["slab_depth"],
                list(voxel),
            )
        if form == "ome.zarr":
            export_ome_zarr(work, outputs.segmentation, voxel, volume_stem(spec))
        if outputs.scores is not None:
            outputs.scores.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(work / "scores.h5", outputs.scores)
        if outputs.aligned is not None:
            save_aligned(work / "aligned.h5", outputs.aligned, voxel)
    log.info("porosity %.4f with %s", porosity, settings)
    return {
        "voxel_size_nm": list(voxel),
        "engine": inference.engine,
        "porosity": porosity,
        "segmentation": str(outputs.segmentation),
        "labels": LABELS[form],
    }


def export_ome_zarr(
    work: Path, destination: Path, voxel: tuple[float, float, float], name: str
) -> None:
    """The OME-Zarr store of one segmented volume from the preprocessed volume, the scores
    and the segmentation in `work`, as rule export_ome_zarr writes it
    (scripts/export_ome_zarr.py): the EM, scores and uncertainty as channels, the label image
    `segmentation` 1 = pore, 2 = solid, at the voxel size."""
    with (
        h5py.File(work / "preprocessed.h5", "r") as preprocessed,
        h5py.File(work / "scores.h5", "r") as scores,
        h5py.File(work / "segmentation.h5", "r") as segmentation,
    ):
        write_ome_zarr(
            destination,
            em=preprocessed["volume"],
            scores=scores["scores"],
            uncertainty=scores["uncertainty"],
            segmentation=segmentation["segmentation"],
            voxel_nm=voxel,
            name=name,
            workers=EXPORT_WORKERS,
        )


VOLUME_SUFFIXES = (*TIFF_SUFFIXES, *H5_SUFFIXES, *MRC_SUFFIXES)


def volume_stem(spec: str) -> str:
    """The name of a volume without its format's ending: `film` for film.tif,
    film.h5:/raw, film.zarr and a folder film/ of slices; the folder's name for a glob."""
    path = split_spec(spec)[0].rstrip("/\\")
    if volume_format(path) == "glob":
        path = str(Path(path).parent)
    name = Path(path).name
    for suffix in (OME_ZARR_SUFFIX, ZARR_SUFFIX, *VOLUME_SUFFIXES):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name
