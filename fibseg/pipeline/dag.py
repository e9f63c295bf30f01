"""What the DAG needs when it is built: context margins, prediction chunks and memory
estimates. Light on purpose (numpy and the model's constants only): building the DAG must
not import TensorFlow, scipy.stats or scikit-image."""

from __future__ import annotations

import json
import math
import zipfile

from ..networks.registry import (
    Architecture,
    Geometry,
    architecture_of_description,
    default_architecture,
)
from ..runtime.settings import InferenceSettings

MB = 1024**2
BASE_MB = 1500  # Python, TensorFlow and the model


def predict_memory_mb(
    height: int, width: int, geometry: Geometry, inference: InferenceSettings
) -> int:
    """Peak memory of one predict_slices job for a model of `geometry`, with 50 % headroom:
    the slices and the working memory of the engine its architecture scores with."""
    slice_bytes = height * width * 4
    source = (geometry.n_z + 1) * slice_bytes * 3  # neighbour slices, their mirrored copy, scores
    work = geometry.architecture.predict_work_bytes(geometry, height, width, inference)
    return BASE_MB + math.ceil(1.5 * (source + work) / MB)


def keras_input_geometry(path: str) -> Geometry | None:
    """The geometry (architecture, n_xy, n_z, padding) read from a `.keras` file's config.json
    without loading the model (for a pretrained model's memory estimate and a bundle's
    description); None where it cannot be read. Not a check: rule check_model loads and
    checks the model."""
    try:
        with zipfile.ZipFile(path) as archive:
            description = json.loads(archive.read("config.json"))["config"]
        return architecture_of_description(description).file_geometry(description)
    except (
        OSError,
        KeyError,
        ValueError,
        TypeError,
        IndexError,
        StopIteration,
        zipfile.BadZipFile,
    ):
        return None


def forest_memory_mb(height: int, width: int, n_z: int, sigma_max: float) -> int:
    """Peak memory of one predict_forest_slices job: the scale-space features (four per sigma,
    sigmas doubling from 0.5 to sigma_max, as multiscale_basic_features) of the n_z - 1
    slices kept (fibseg.baselines.forest.ForestScorer) and of the new slice with its copy,
    and the slices read, with 50 % headroom."""
    per_slice = 4 * (int(math.log2(sigma_max / 0.5)) + 1)
    slice_bytes = height * width * 4
    return BASE_MB + math.ceil(1.5 * slice_bytes * ((n_z + 1) * per_slice + 3 * n_z) / MB)


# Bytes per voxel of one slab at the peak of fibseg.evaluation.postprocess.write_segmentation: the
# slab's mask, its labels (uint32), the kept mask and its inverse or uint8 copy
# (benchmarks/postprocess.py measured 8.6 on 1024 x 2048 slices)
STREAMED_BYTES_PER_VOXEL = 10
SMOOTHING_SLICE_COPIES = 8  # float32 slices alive while one slice is smoothed twice


def postprocess_memory_mb(shape: tuple[int, int, int], slab_depth: int) -> int:
    """Memory of one postprocess job, which streams the volume in slabs of `slab_depth`
    slices: a slab's masks and labels and a few float32 slices of the smoothing, with 50 %
    headroom. The depth does not enter (the face components' sizes, kept for the whole
    volume, are a few bytes per component that touches a slab face)."""
    _, height, width = shape
    slab = min(slab_depth, shape[0]) * height * width
    smoothing = SMOOTHING_SLICE_COPIES * height * width * 4
    return BASE_MB // 3 + math.ceil(1.5 * (slab * STREAMED_BYTES_PER_VOXEL + smoothing) / MB)


# Bytes per voxel of one slab of rule export_ome_zarr: three float32 channels and the uint8
# labels (fibseg.io.omezarr streams whole-slice slabs through dask)
EXPORT_BYTES_PER_VOXEL = 3 * 4 + 1


def export_memory_mb(shape: tuple[int, int, int], slab_depth: int, workers: int) -> int:
    """Memory of one export_ome_zarr job: about 1 + `workers` slabs of `slab_depth` slices
    alive at once (measured: 0.6 + 0.8 x workers on 48 slices of 1024 x 1024), with 50 %
    headroom."""
    _, height, width = shape
    slab = min(slab_depth, shape[0]) * height * width * EXPORT_BYTES_PER_VOXEL
    return BASE_MB // 3 + math.ceil(1.5 * (1 + workers) * slab / MB)


def smoothing_margin(sigmas: list[float]) -> int:
    """Pixels of context around a region that the widest smoothing needs (4 sigma)."""
    return math.ceil(4 * max(sigmas))


def context_margins(
    n_xys: list[int],
    n_zs: list[int],
    sigmas: list[float],
    architecture: Architecture | None = None,
) -> dict[str, int]:
    """Context kept around every region: what the grid's networks see (x-y: as the
    `architecture` says, the patch CNN's by default: half the largest neighbourhood; z: half
    the most slices) and the widest smoothing of the post-processing. (The forest's widest
    feature, 4 x 16 px, reaches a little beyond the demo's 56 px; its weight out there is
    below 0.3 %.)"""
    architecture = architecture or default_architecture()
    xy = max(architecture.context_xy(n_xy) for n_xy in n_xys)
    return {"xy": xy, "z": max(n_zs) // 2, "smooth": smoothing_margin(sigmas)}


def chunk_names(depth: int, slices_per_job: int) -> list[str]:
    """One chunk name per predict_slices job of `slices_per_job` slices."""
    return [f"{chunk:04d}" for chunk in range(-(-depth // slices_per_job))]


def centre_chunks(depth: int, slices_per_job: int, wanted: int) -> list[str]:
    """The chunks around the volume's centre that together hold at least `wanted` slices
    (whole predict jobs, contiguous); every chunk when `wanted` is 0 or reaches the depth."""
    names = chunk_names(depth, slices_per_job)
    if wanted <= 0 or wanted >= depth:
        return names
    first = (depth - wanted) // 2
    stop = first + wanted
    return [
        name
        for name in names
        if first < (int(name) + 1) * slices_per_job and int(name) * slices_per_job < stop
    ]


def chunk_slices(chunk: str, depth: int, slices_per_job: int) -> list[int]:
    """[first, stop) slice of one chunk."""
    first = int(chunk) * slices_per_job
    return [first, min(first + slices_per_job, depth)]


STRUCTURE_BYTES_PER_VOXEL = 320  # the analysis grid's peak (benchmarks/structure.py: 305 B)


def structure_memory_mb(shape: tuple[int, int, int], voxel_nm: list[float], structure: dict) -> int:
    """Memory of one analyze_structure job: the native volume and its pore mask (1 byte each)
    and the analysis grid (fibseg.structure.grid.analysis_shape: at most `max_voxels`, never
    finer than the finest native voxel, or of side `voxel_nm`), with 20 % headroom: a full
    paper volume with max_voxels 6e7 then asks for 26 GB."""
    native = shape[0] * shape[1] * shape[2]
    extent = math.prod(n * v for n, v in zip(shape, voxel_nm, strict=True))
    side = structure.get("voxel_nm") or min(voxel_nm)
    grid = extent / side**3
    if not structure.get("voxel_nm"):
        grid = min(grid, structure.get("max_voxels", 2_000_000))
    work = 2 * native + STRUCTURE_BYTES_PER_VOXEL * grid
    return BASE_MB // 3 + math.ceil(1.2 * work / MB)
