"""The 3-D TIFF reader: memory-mapped where the data are contiguous, else decoded page by
page; a file cut short fails when it is opened. Voxel size from OME, ImageJ, an instrument's
tags (FEI/Thermo Fisher, Zeiss SEM) or resolution tags."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from xml.etree import ElementTree

import numpy as np
import tifffile

from .formats import Reader
from .voxel_size import NOT_FOUND, FoundVoxel, Voxel, unit_nm

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


class TiffPages:
    """A non-contiguous (compressed or scattered) 3-D TIFF, decoded page by page."""

    def __init__(self, tif: tifffile.TiffFile) -> None:
        self.series = tif.series[0]
        self.shape, self.dtype = tuple(self.series.shape), self.series.dtype
        self.per_page = len(self.series.pages) == self.shape[0] if self.shape else False

    def __getitem__(self, key: slice | tuple) -> np.ndarray:
        """`[start:stop]` along z, or a tuple key that also indexes the size-1 axes that
        `Volume` drops (page by page where z comes first)."""
        rest = key[1:] if isinstance(key, tuple) else ()
        z = key[0] if isinstance(key, tuple) else key
        if self.per_page and isinstance(z, slice):
            indices = range(*z.indices(self.shape[0]))
            pages = [self.series.pages[i].asarray().reshape(self.shape[1:]) for i in indices]
            return np.stack(pages)[(slice(None), *rest)]
        return self.series.asarray()[(z, *rest)]


def open_tiff(
    path: str, inner: str | None, files: list[str], dataset_name: str | None, stack: ExitStack
):
    """A memory map of a contiguous TIFF, else its pages (`TiffPages`)."""
    with tiff_damage() as damage:
        tif = stack.enter_context(tifffile.TiffFile(path))
        len(tif.pages)  # walks every page header, so a file cut short shows here
        series = tif.series[0] if tif.series else None
    if damage:
        raise ValueError(f"the file is cut short or damaged (tifffile: {damage[0]})")
    if series is not None and series.dataoffset is not None:
        return tifffile.memmap(path, mode="r")  # contiguous: no decoding
    return TiffPages(tif)


def ome_size(tif: tifffile.TiffFile) -> Voxel | None:
    """OME `PhysicalSizeZ/Y/X` in their units (µm by default); None without OME pixels."""
    if not (tif.is_ome and tif.ome_metadata):
        return None
    pixels = next(
        (e for e in ElementTree.fromstring(tif.ome_metadata).iter() if e.tag.endswith("Pixels")),
        None,
    )
    if pixels is None:
        return None
    sizes = []
    for axis in "ZYX":
        value = pixels.get(f"PhysicalSize{axis}")
        scale = unit_nm(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        sizes.append(float(value) * scale if value and scale else None)
    return tuple(sizes)


def imagej_size(tif: tifffile.TiffFile) -> Voxel | None:
    """An ImageJ stack's `unit` and `spacing` with the X/YResolution tags; None without ImageJ
    metadata or with a unit that is not a length."""
    imagej = tif.imagej_metadata or {}
    scale = unit_nm(imagej.get("unit")) if imagej else None
    if scale is None:
        return None
    z = imagej.get("spacing")
    if z is None and max(imagej.get("slices", 1), imagej.get("images", 1)) > 1:
        z = 1.0  # ImageJ's default depth of a calibrated stack: one unit
    return (float(z) * scale if z else None, *resolution_yx(tif.pages.first, scale))


def resolution_yx(page: tifffile.TiffPage, scale: float) -> tuple[float | None, float | None]:
    """(y, x) pixel size from the X/YResolution tags (pixels per unit), `scale` nm a unit."""
    x_per_unit, y_per_unit = page.resolution
    return (
        scale / y_per_unit if y_per_unit > 0 else None,
        scale / x_per_unit if x_per_unit > 0 else None,
    )


def metres_nm(value: object) -> float | None:
    """A positive length in metres, in nm; None if it is not one."""
    return float(value) * 1e9 if isinstance(value, int | float) and value > 0 else None


def fei_size(tif: tifffile.TiffFile) -> Voxel | None:
    """FEI / Thermo Fisher (Helios, Scios, Quanta) tags (tifffile's `fei_metadata`):
    [Scan] PixelHeight and PixelWidth in metres ([EScan] or [IScan] without a [Scan]
    section). y and x only: the slice thickness is not in the image."""
    metadata = tif.fei_metadata or {}
    for section in ("Scan", "EScan", "IScan"):
        scan = metadata.get(section) or {}
        x = metres_nm(scan.get("PixelWidth"))
        y = metres_nm(scan.get("PixelHeight")) or x  # square pixels when only the width
        if x or y:
            return None, y, x
    return None


def zeiss_size(tif: tifffile.TiffFile) -> Voxel | None:
    """Zeiss SEM tag (SmartSEM, Atlas; tifffile's `sem_metadata`): `ap_image_pixel_size` or
    `ap_pixel_size`, (name, value, unit), for y and x alike. y and x only."""
    metadata = tif.sem_metadata or {}
    for key in ("ap_image_pixel_size", "ap_pixel_size"):
        entry = metadata.get(key)
        if isinstance(entry, tuple) and len(entry) == 3 and isinstance(entry[1], int | float):
            scale = unit_nm(entry[2])
            if scale and entry[1] > 0:
                return None, entry[1] * scale, entry[1] * scale
    return None


def resolution_size(tif: tifffile.TiffFile) -> Voxel | None:
    """The X/YResolution tags with a metric ResolutionUnit (cm, mm, µm; not inch)."""
    page = tif.pages.first
    scale = {3: 1e7, 4: 1e6, 5: 1e3}.get(int(page.resolutionunit))  # cm, mm, µm
    return None if scale is None else (None, *resolution_yx(page, scale))


# the TIFF metadata a voxel size is read from, first found first
TIFF_METADATA = (
    ("OME", ome_size),
    ("ImageJ", imagej_size),
    ("FEI metadata", fei_size),
    ("Zeiss SEM metadata", zeiss_size),
    ("TIFF resolution", resolution_size),
)


def tiff_calibration(path: str) -> FoundVoxel:
    """(z, y, x) in nm from a TIFF's first page and which metadata gave it, the first of
    `TIFF_METADATA` that gives any axis: OME PhysicalSize; ImageJ unit and spacing with the
    X/YResolution tags; FEI/Thermo Fisher or Zeiss SEM pixel size (y, x); a metric
    ResolutionUnit (y, x). None for an axis it does not give."""
    with tifffile.TiffFile(path) as tif:
        for kind, read in TIFF_METADATA:
            found = read(tif)
            if found is not None and any(found):
                return FoundVoxel(found, kind)
    return NOT_FOUND


def tiff_voxel_size_nm(path: str) -> Voxel:
    """(z, y, x) in nm from a TIFF's metadata (`tiff_calibration`), None per axis it lacks."""
    return tiff_calibration(path).voxel


def tiff_reader_voxel_size_nm(path: str, inner: str | None, files: list[str], data) -> FoundVoxel:
    """The voxel size of the TIFF (`tiff_calibration`)."""
    return tiff_calibration(path)


READER = Reader(open=open_tiff, voxel_size_nm=tiff_reader_voxel_size_nm)
