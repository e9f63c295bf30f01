"""Volumes (TIFF stacks, slice folders, HDF5, Zarr, MRC), voxel sizes, atomic writes and
input errors."""

from __future__ import annotations

import contextlib
import glob
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import h5py
import numpy as np
import tifffile


class InputError(ValueError):
    """Bad user input. The message names the data set, the file, the problem and the fix."""

    def __init__(
        self,
        problem: str,
        *,
        dataset: str | None = None,
        file: str | None = None,
        fix: str | None = None,
    ) -> None:
        where = []
        if dataset:
            where.append(f"data set '{dataset}'")
        if file:
            where.append(f"file '{file}'")
        text = (", ".join(where) + ": " if where else "") + problem
        if fix:
            text += f" Fix: {fix}"
        super().__init__(text)


class LimitError(ValueError):
    """A limit of the method was broken. `problem` and `fix` say what and how; the caller
    turns it into an InputError that names the config key or the file."""

    def __init__(self, problem: str, fix: str, key: str = "") -> None:
        self.problem, self.fix, self.key = problem, fix, key
        super().__init__(f"{problem} Fix: {fix}")


H5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
ZARR_SUFFIX = ".zarr"
MRC_SUFFIXES = (".mrc", ".mrcs", ".rec", ".map", ".st", ".ali")
TIFF_SUFFIXES = (".tif", ".tiff")
GLOB_CHARACTERS = "*?["
FORMAT_NAMES = {
    "tiff": "3-D TIFF",
    "hdf5": "HDF5 file",
    "zarr": "Zarr store",
    "mrc": "MRC file",
    "folder": "folder of 2-D TIFF slices",
    "glob": "set of 2-D TIFF slices",
}


def split_spec(spec: str) -> tuple[str, str | None]:
    """Split `file.h5:/dataset` into (file, dataset) and `file.zarr:/path` into (store, path);
    any other spec (TIFF, MRC, folder, glob, `file.zarr`) gives (spec, None)."""
    spec = str(spec)
    for suffix in H5_SUFFIXES:
        marker = suffix + ":"
        if marker in spec:
            head, _, inner = spec.partition(marker)
            return head + suffix, inner or "/volume"
        if spec.endswith(suffix):
            return spec, "/volume"
    marker = ZARR_SUFFIX + ":"
    if marker in spec:
        head, _, inner = spec.partition(marker)
        return head + ZARR_SUFFIX, inner.strip("/") or None
    return spec, None


def volume_format(path: str) -> str:
    """What a volume path (the first part of `split_spec`) names: tiff, hdf5, zarr, mrc, a
    folder of slices or a glob of slices."""
    path = str(path)
    if any(character in path for character in GLOB_CHARACTERS):
        return "glob"
    lower = path.lower().rstrip("/")
    if lower.endswith(H5_SUFFIXES):
        return "hdf5"
    if lower.endswith(ZARR_SUFFIX):
        return "zarr"
    if lower.endswith(MRC_SUFFIXES):
        return "mrc"
    if Path(path).is_dir():
        return "folder"
    return "tiff"


def slice_files(path: str) -> list[str]:
    """The 2-D TIFF slices of a folder (its *.tif and *.tiff files) or of a glob pattern, in
    natural order (slice_2 before slice_10)."""
    if volume_format(path) == "folder":
        names = [
            str(entry)
            for entry in Path(path).iterdir()
            if entry.suffix.lower() in TIFF_SUFFIXES and not entry.name.startswith(".")
        ]
    else:
        names = glob.glob(path)
    return tifffile.natural_sorted([name for name in names if Path(name).is_file()])


def volume_files(spec: str) -> list[str]:
    """The paths that hold a volume: its file (or `.zarr` folder), or every slice file of a
    folder or glob. Rules take them as input; `check_external_inputs` checks them."""
    path = split_spec(spec)[0]
    if volume_format(path) in ("folder", "glob"):
        return slice_files(path)
    return [path]


def volume_exists(spec: str) -> bool:
    """Whether the volume's file, `.zarr` folder or at least one slice file is there."""
    path = split_spec(spec)[0]
    kind = volume_format(path)
    if kind in ("folder", "glob"):
        return bool(slice_files(path))
    return Path(path).is_dir() if kind == "zarr" else Path(path).is_file()


class SliceFiles:
    """A (z, y, x) stack of one 2-D TIFF per slice, read lazily: `[start:stop]` reads only
    those files. A file that cannot be read or differs in size raises an InputError that
    names the slice and the file."""

    def __init__(self, files: list[str], dataset: str | None = None) -> None:
        self.files, self.dataset = files, dataset
        first = self.read_file(0)
        self.dtype = first.dtype
        self.shape = (len(files), *first.shape)

    def read_file(self, z: int) -> np.ndarray:
        """Slice z, checked to be 2-D and (after slice 0) of the size of slice 0."""
        path = self.files[z]
        try:
            image = tifffile.imread(path)
        except Exception as error:
            raise InputError(
                f"slice {z} cannot be read ({type(error).__name__}: {error}).",
                dataset=self.dataset,
                file=path,
                fix="replace the truncated or corrupt slice file, or remove stray files "
                "from the folder.",
            ) from error
        if image.ndim != 2 or (z > 0 and image.shape != self.shape[1:]):
            expected = "2-D" if image.ndim != 2 else f"{self.shape[1]} x {self.shape[2]}"
            raise InputError(
                f"slice {z} has shape {image.shape}; every slice must be a greyscale image "
                f"of {expected} pixels (as slice 0, {self.files[0]}).",
                dataset=self.dataset,
                file=path,
                fix="save every slice as a 2-D greyscale TIFF of the same size, and keep "
                "other images out of the folder.",
            )
        return image

    def __getitem__(self, key: slice) -> np.ndarray:
        indices = range(*key.indices(len(self.files)))
        if not indices:
            return np.empty((0, *self.shape[1:]), self.dtype)
        return np.stack([self.read_file(z) for z in indices])


class TiffPages:
    """A non-contiguous (compressed or scattered) 3-D TIFF, decoded page by page."""

    def __init__(self, tif: tifffile.TiffFile) -> None:
        self.series = tif.series[0]
        self.shape, self.dtype = tuple(self.series.shape), self.series.dtype
        self.per_page = len(self.series.pages) == self.shape[0] if self.shape else False

    def __getitem__(self, key: slice) -> np.ndarray:
        if self.per_page:
            indices = range(*key.indices(self.shape[0]))
            return np.stack([self.series.pages[z].asarray() for z in indices])
        return self.series.asarray()[key]


def ome_multiscales(attrs: dict) -> list | None:
    """The OME-Zarr `multiscales` of a group's attributes (NGFF 0.4 or 0.5), else None."""
    attrs = dict(attrs)
    return attrs.get("multiscales") or dict(attrs.get("ome") or {}).get("multiscales")


def open_zarr(path: str, inner: str | None) -> tuple[object, list | None]:
    """The array of `path` (a store) at `inner`; a group with OME-Zarr multiscales gives its
    first (full-resolution) level. Returns (array, multiscales or None)."""
    import zarr

    node = zarr.open(path, mode="r", path=inner or "")
    multiscales = None
    if isinstance(node, zarr.Group):
        multiscales = ome_multiscales(node.attrs)
        if not multiscales:
            raise LookupError(
                f"'{inner or '/'}' is a Zarr group without OME-Zarr multiscales; it holds "
                f"{sorted(node.keys()) or 'nothing'}"
            )
        node = node[multiscales[0]["datasets"][0]["path"]]
    return node, multiscales


DAMAGE_WORDS = ("invalid page offset", "truncat", "corrupt", "cannot read", "failed to")


@contextlib.contextmanager
def tiff_damage() -> Iterator[list[str]]:
    """Collect what tifffile logs about a damaged file (it reads on past a broken page
    chain with only a log line); the caller fails if the list is not empty."""
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if any(word in message.lower() for word in DAMAGE_WORDS):
                found.append(message)

    handler, tiff_logger = Collect(logging.WARNING), logging.getLogger("tifffile")
    tiff_logger.addHandler(handler)
    try:
        yield found
    finally:
        tiff_logger.removeHandler(handler)


class Volume:
    """Read-only (z, y, x) stack that reads slices lazily: a 3-D TIFF (memory-mapped where its
    data are contiguous), HDF5 `file.h5:/dataset`, Zarr or OME-Zarr `file.zarr[:/path]`, MRC,
    or a folder or glob of 2-D TIFF slices (natural order)."""

    def __init__(self, spec: str, dataset_name: str | None = None) -> None:
        self.spec = str(spec)
        self.path, inner = split_spec(self.spec)
        self.format = volume_format(self.path)
        self.h5_path = inner if self.format == "hdf5" else None
        self.dataset_name = dataset_name
        self.files = volume_files(self.spec)
        if not volume_exists(self.spec):
            what = {"folder": "holds no TIFF slices (*.tif, *.tiff)", "glob": "matches no file"}
            raise InputError(
                f"the volume {what.get(self.format, 'file does not exist')}.",
                dataset=dataset_name,
                file=self.path,
                fix="correct the path in the data set sheet.",
            )
        self._stack = contextlib.ExitStack()
        self._prefix: tuple[int, ...] = ()  # leading singleton axes of an OME-Zarr array
        try:
            self._data = self._open(inner)
            shape = tuple(self._data.shape)
            if self.format == "zarr":
                while len(shape) > 3 and shape[0] == 1:
                    self._prefix, shape = (*self._prefix, 0), shape[1:]
            self.shape, self.dtype = shape, np.dtype(self._data.dtype)
        except InputError:
            self.close()
            raise
        except Exception as error:  # any reader failure means an unreadable file
            self.close()
            raise InputError(
                f"cannot be read ({type(error).__name__}: {error}).",
                dataset=dataset_name,
                file=self.path,
                fix="copy or export it again: a complete, undamaged "
                f"{FORMAT_NAMES[self.format]} is expected.",
            ) from error
        if len(self.shape) != 3:
            self.close()
            raise InputError(
                f"is {len(self.shape)}-D with shape {self.shape}; a (z, y, x) "
                "stack of 2-D slices is expected.",
                dataset=dataset_name,
                file=self.path,
                fix="save the volume as a 3-D stack of greyscale "
                "slices (no colour channels, no time axis).",
            )

    def _open(self, inner: str | None):
        """The reader of the format: anything that slices as `[start:stop]` along z."""
        if self.format == "hdf5":
            handle = self._stack.enter_context(h5py.File(self.path, "r"))
            if inner not in handle:
                raise InputError(
                    f"has no HDF5 dataset '{inner}' (it holds: "
                    f"{', '.join(handle.keys()) or 'nothing'}).",
                    dataset=self.dataset_name,
                    file=self.path,
                    fix="write the volume path as 'file.h5:/dataset'.",
                )
            return handle[inner]
        if self.format == "zarr":
            return open_zarr(self.path, inner)[0]
        if self.format == "mrc":
            import mrcfile

            return self._stack.enter_context(mrcfile.mmap(self.path, mode="r")).data
        if self.format in ("folder", "glob"):
            return SliceFiles(self.files, self.dataset_name)
        with tiff_damage() as damage:
            tif = self._stack.enter_context(tifffile.TiffFile(self.path))
            len(tif.pages)  # walks every page header, so a file cut short shows here
            series = tif.series[0] if tif.series else None
        if damage:
            raise ValueError(f"the file is cut short or damaged (tifffile: {damage[0]})")
        if series is not None and series.dataoffset is not None:
            return tifffile.memmap(self.path, mode="r")  # contiguous: no decoding
        return TiffPages(tif)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Slices [start, stop) as an array of shape (stop - start, y, x)."""
        stop = self.shape[0] if stop is None else stop
        key = (*self._prefix, slice(start, stop)) if self._prefix else slice(start, stop)
        try:
            return np.array(self._data[key])
        except (InputError, AttributeError, TypeError, NameError):
            raise
        except Exception as error:
            raise InputError(
                f"slices {start}-{stop - 1} cannot be read ({type(error).__name__}: {error}).",
                dataset=self.dataset_name,
                file=self.path,
                fix="the file is truncated or corrupt: copy or export it again.",
            ) from error

    def read_slices(self, indices: np.ndarray) -> np.ndarray:
        """The slices at `indices` (repeats allowed, as mirroring makes), each read once."""
        unique = {int(z): self.read(int(z), int(z) + 1)[0] for z in np.unique(indices)}
        return np.stack([unique[int(z)] for z in indices])

    def __len__(self) -> int:
        return self.shape[0]

    def close(self) -> None:
        self._data = None  # drops a memory map
        self._stack.close()

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


UNIT_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "μm": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "millimetre": 1e6,
    "cm": 1e7,
    "centimeter": 1e7,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
    "å": 0.1,
    "Å": 0.1,
    "angstrom": 0.1,
    "pm": 1e-3,
    "picometer": 1e-3,
}
Voxel = tuple[float | None, float | None, float | None]


def unit_nm(unit: object) -> float | None:
    """Nanometres per `unit` (ImageJ, OME and OME-Zarr spellings), None if not a length."""
    if unit is None:
        return None
    text = str(unit).strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ")
    return UNIT_NM.get(text, UNIT_NM.get(text.lower()))


def tiff_voxel_size_nm(path: str) -> Voxel:
    """(z, y, x) in nm from a TIFF's OME PhysicalSize, or its ImageJ unit and spacing with the
    X/YResolution tags, or a metric ResolutionUnit; None for an axis it does not give."""
    with tifffile.TiffFile(path) as tif:
        if tif.is_ome and tif.ome_metadata:
            pixels = next(
                (
                    e
                    for e in ElementTree.fromstring(tif.ome_metadata).iter()
                    if e.tag.endswith("Pixels")
                ),
                None,
            )
            if pixels is not None:
                sizes = []
                for axis in "ZYX":
                    value = pixels.get(f"PhysicalSize{axis}")
                    scale = unit_nm(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
                    sizes.append(float(value) * scale if value and scale else None)
                return tuple(sizes)
        page, imagej = tif.pages.first, tif.imagej_metadata or {}
        if imagej:
            scale = unit_nm(imagej.get("unit"))
        else:
            scale = {3: 1e7, 4: 1e6, 5: 1e3}.get(int(page.resolutionunit))  # cm, mm, µm
        if scale is None:
            return None, None, None
        x_per_unit, y_per_unit = page.resolution
        z = imagej.get("spacing")
        if z is None and imagej and max(imagej.get("slices", 1), imagej.get("images", 1)) > 1:
            z = 1.0  # ImageJ's default depth of a calibrated stack: one unit
        return (
            float(z) * scale if z else None,
            scale / y_per_unit if y_per_unit > 0 else None,
            scale / x_per_unit if x_per_unit > 0 else None,
        )


def zarr_voxel_size_nm(path: str, inner: str | None) -> Voxel:
    """(z, y, x) in nm from OME-Zarr multiscales: the first level's `scale` (times a
    multiscale-wide one), in the axes' units."""
    _, multiscales = open_zarr(path, inner)
    if not multiscales:
        return None, None, None
    first = multiscales[0]
    scale = np.ones(len(first.get("axes", [])) or 3)
    for transform in [
        *first.get("coordinateTransformations", []),
        *first["datasets"][0].get("coordinateTransformations", []),
    ]:
        if transform.get("type") == "scale":
            scale = scale * np.asarray(transform["scale"], dtype=np.float64)
    axes = first.get("axes") or [{}] * len(scale)
    units = [unit_nm(axis.get("unit")) if isinstance(axis, dict) else None for axis in axes]
    return tuple(
        float(value) * unit if unit else None
        for value, unit in zip(scale[-3:], units[-3:], strict=True)
    )


def metadata_voxel_size_nm(spec: str, dataset_name: str | None = None) -> Voxel:
    """(z, y, x) voxel size in nm that a volume's own metadata gives (None per axis it does not
    give): TIFF (ImageJ, OME, resolution; a folder or glob: its first slice), HDF5
    `element_size_um`, OME-Zarr scale, MRC `voxel_size` (Å)."""
    path, inner = split_spec(spec)
    kind = volume_format(path)
    with Volume(spec, dataset_name) as volume:  # checks that it exists and opens
        files = volume.files
        if kind == "hdf5":
            size_um = volume._data.attrs.get("element_size_um")
            if size_um is not None and len(size_um) == 3:
                return tuple(float(v) * 1e3 if v > 0 else None for v in size_um)
            return None, None, None
    if kind == "zarr":
        return zarr_voxel_size_nm(path, inner)
    if kind == "mrc":
        import mrcfile

        with mrcfile.mmap(path, mode="r") as mrc:
            size = mrc.voxel_size
            return tuple(float(size[a]) / 10 if size[a] > 0 else None for a in "zyx")
    return tiff_voxel_size_nm(files[0])


def parse_voxel_size(text: str, dataset_name: str | None = None, sheet: str | None = None):
    """A sheet's `voxel_size_nm` cell, "z,y,x" (or one number for all axes), in nm."""
    try:
        values = tuple(float(part) for part in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise InputError(
            f"column 'voxel_size_nm' holds '{text}'; three positive numbers z,y,x are expected.",
            dataset=dataset_name,
            file=sheet,
            fix="write the voxel size in nm as z,y,x, e.g. 50,10,10, or leave it empty to "
            "read it from the volume's metadata.",
        )
    return values


def voxel_size_nm(
    spec: str | None,
    default: tuple[float, float, float],
    given: str | None = None,
    dataset_name: str | None = None,
    sheet: str | None = None,
) -> tuple[float, float, float]:
    """A data set's (z, y, x) voxel size in nm: the sheet's `given` value, else per axis the
    volume's metadata (when `spec` is given), else `default` (the config's)."""
    if isinstance(given, str) and given.strip():
        return parse_voxel_size(given, dataset_name, sheet)
    found = metadata_voxel_size_nm(spec, dataset_name) if spec else (None, None, None)
    return tuple(
        float(value if value else fallback) for value, fallback in zip(found, default, strict=True)
    )


def element_size_um(voxel_nm: tuple[float, float, float] | None) -> dict[str, np.ndarray]:
    """The HDF5 attribute `element_size_um` (z, y, x in µm, as Fiji and ilastik read it)."""
    if voxel_nm is None:
        return {}
    return {"element_size_um": np.asarray(voxel_nm, dtype=np.float64) / 1e3}


def imagej_calibration(voxel_nm: tuple[float, float, float] | None) -> dict[str, object]:
    """`TiffWriter.write` keywords that give an ImageJ stack its voxel size (in nm)."""
    if voxel_nm is None:
        return {"metadata": {"axes": "ZYX"}}
    z, y, x = (float(v) for v in voxel_nm)
    return {
        "resolution": (1 / x, 1 / y),
        "metadata": {"axes": "ZYX", "spacing": z, "unit": "nm"},
    }


H5_COMPRESSION = {"compression": "gzip", "compression_opts": 1}  # every HDF5 output fibseg writes


def read_volume(spec: str, dataset_name: str | None = None) -> np.ndarray:
    """Whole volume in memory."""
    with Volume(spec, dataset_name) as volume:
        return volume.read()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; move it onto `path` only on success (an
    existing `path` is replaced), so a killed job leaves no half-written store."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_tiff(
    path: str | os.PathLike,
    array: np.ndarray,
    voxel_nm: tuple[float, float, float] | None = None,
    **metadata: object,
) -> None:
    """Write a (z, y, x) stack as a multi-page TIFF that Fiji and napari open, atomically;
    with `voxel_nm`, an ImageJ stack carries that voxel size."""
    with atomic_output(path) as tmp:
        imagej = array.dtype in (np.uint8, np.uint16, np.float32)
        calibration = imagej_calibration(voxel_nm if imagej else None)
        tifffile.imwrite(
            tmp,
            array,
            photometric="minisblack",
            imagej=imagej,
            resolution=calibration.get("resolution"),
            metadata={**calibration["metadata"], **metadata} if array.ndim == 3 else None,
        )


def compression(array_shape: tuple[int, ...]) -> dict[str, object]:
    """`create_dataset` keywords that compress a dataset (none for scalars and empty ones)."""
    return H5_COMPRESSION if len(array_shape) and math.prod(array_shape) else {}


def write_h5(
    path: str | os.PathLike,
    arrays: dict[str, np.ndarray],
    attrs: dict[str, object] | None = None,
    slice_chunks: bool = True,
    voxel_nm: tuple[float, float, float] | None = None,
) -> None:
    """Write arrays to one HDF5 file atomically, compressed; 3-D arrays are chunked one slice
    per chunk and, with `voxel_nm`, carry `element_size_um`."""
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as handle:
        for name, array in arrays.items():
            array = np.asarray(array)
            chunks = (1, *array.shape[1:]) if slice_chunks and array.ndim == 3 else None
            data = handle.create_dataset(
                name, data=array, chunks=chunks, **compression(array.shape)
            )
            if array.ndim == 3:
                data.attrs.update(element_size_um(voxel_nm))
        handle.attrs.update(attrs or {})


def write_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame to CSV atomically."""
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, index=False)


def stitch_chunks(
    chunk_paths: list[str],
    output: str,
    dtype: str = "float32",
    voxel_nm: tuple[float, float, float] | None = None,
) -> tuple:
    """Write the chunks' `/scores` (and `/uncertainty`, where present) into one compressed
    volume each (with `element_size_um` of `voxel_nm`); every slice exactly once. The chunks'
    other attributes are kept."""
    pieces, names, attrs = [], [], {}
    for path in chunk_paths:
        with h5py.File(path, "r") as handle:
            if not pieces:  # the arrays and attributes every chunk carries
                names = [name for name in ("scores", "uncertainty") if name in handle]
                attrs = {
                    k: v for k, v in handle.attrs.items() if k not in ("first_slice", "stop_slice")
                }
            pieces.append(
                (
                    int(handle.attrs["first_slice"]),
                    int(handle.attrs["stop_slice"]),
                    path,
                    handle["scores"].shape[1:],
                )
            )
    pieces.sort()
    depth = pieces[-1][1]
    covered = np.zeros(depth, np.int64)
    for first, stop, _, _ in pieces:
        covered[first:stop] += 1
    if not (covered == 1).all() or len({p[3] for p in pieces}) != 1:
        raise ValueError(
            f"score chunks do not cover slices 0-{depth - 1} exactly once: "
            f"{[(p[0], p[1]) for p in pieces]}"
        )
    shape = (depth, *pieces[0][3])
    with atomic_output(output) as tmp, h5py.File(tmp, "w") as out:
        out.attrs.update(attrs)
        for name in names:
            data = out.create_dataset(
                name, shape=shape, dtype=dtype, chunks=(1, *shape[1:]), **compression(shape)
            )
            data.attrs.update(element_size_um(voxel_nm))
            for first, stop, path, _ in pieces:
                with h5py.File(path, "r") as handle:
                    data[first:stop] = np.clip(handle[name][:], 0, 1).astype(dtype)
    return shape
