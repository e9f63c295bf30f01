"""One volume segmented with a model bundle, without a sheet (`fibseg predict`): the steps of
the workflow's `pretrained` route, in-process and in its order, so that the segmentation is the
workflow's voxel for voxel: rule check_dataset's checks, align (config key `align`),
correct_gradient, check_model, predict_slices (chunk by chunk), stitch and postprocess."""

from __future__ import annotations

import json
import logging
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
from ..io.formats import split_spec
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
TIFF_SUFFIXES, HDF5_SUFFIXES = (".tif", ".tiff"), (".h5", ".hdf5")


@dataclass(frozen=True)
class PredictOutputs:
    """Where `segment_volume` writes: the segmentation TIFF, and optionally the scores (HDF5,
    as results/{ds}/scores.h5) and the aligned volume (HDF5 `/volume`, or a TIFF that napari
    opens; the segmentation's frame: correct the segmentation on it, and train on it with
    `aligned: true`)."""

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
        if self.segmentation.suffix.lower() not in TIFF_SUFFIXES:
            raise InputError(
                "the output is not a TIFF file name.",
                file=str(self.segmentation),
                fix="name the output .tif (a multi-page TIFF with the voxel size).",
            )
        for path in (self.scores, self.aligned):
            if path is not None and path.suffix.lower() not in (".h5", ".hdf5"):
                raise InputError("is not an HDF5 file name.", file=str(path), fix="name it .h5.")


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
) -> dict:
    """Segment the volume `spec` (any format fibseg reads) with `pretrained` (a bundle) as the
    workflow's `pretrained` route does with `config` (its `align`, `inference`, `postprocess`
    and `resources` sections); `aligned` skips the alignment (the sheet's `aligned: true`).
    Returns a summary (voxel size, porosity, what was written)."""
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
    members = [load_member(path, inference, None, threads) for path in pretrained.models]
    settings = json.loads(Path(pretrained.postprocess).read_text())
    outputs.segmentation.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=".fibseg-predict-", dir=outputs.segmentation.parent
    ) as tmp:
        work = Path(tmp)
        preprocessed = preprocess(spec, name, work, voxel, None if aligned else align, log)
        chunks = score_chunks(preprocessed, name, members, inference.slices_per_job, work, log)
        stitch_chunks(chunks, str(work / "scores.h5"), inference.score_dtype, list(voxel))
        with h5py.File(work / "scores.h5", "r") as handle:
            porosity = write_segmentation(
                handle["scores"],
                settings,
                work / "segmentation.h5",
                outputs.segmentation,
                {**settings, "voxel_size_nm_zyx": list(voxel)},
                config["postprocess"]["slab_depth"],
                list(voxel),
            )
        if outputs.scores is not None:
            outputs.scores.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(work / "scores.h5", outputs.scores)
        if outputs.aligned is not None:
            save_aligned(work / "aligned.h5", outputs.aligned, voxel)
    log.info("porosity %.4f with %s", porosity, settings)
    return {
        **summary,
        "voxel_size_nm": list(voxel),
        "engine": inference.engine,
        "porosity": porosity,
        "segmentation": str(outputs.segmentation),
    }
