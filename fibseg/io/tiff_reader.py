"""The 3-D TIFF reader: memory-mapped where the data are contiguous, else decoded page by
page; a file cut short fails when it is opened. Voxel size from OME, ImageJ or resolution
tags."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from xml.etree import ElementTree

import numpy as np
import tifffile

from .formats import Reader
from .voxel_size import Voxel, unit_nm

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

    def __getitem__(self, key: slice) -> np.ndarray:
        if self.per_page:
            indices = range(*key.indices(self.shape[0]))
            return np.stack([self.series.pages[z].asarray() for z in indices])
        return self.series.asarray()[key]


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


def tiff_reader_voxel_size_nm(path: str, inner: str | None, files: list[str], data) -> Voxel:
    """The voxel size of the TIFF (`tiff_voxel_size_nm`)."""
    return tiff_voxel_size_nm(path)


READER = Reader(open=open_tiff, voxel_size_nm=tiff_reader_voxel_size_nm)
