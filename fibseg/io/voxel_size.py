"""Voxel sizes as text and as file attributes: length units (ImageJ, OME and OME-Zarr
spellings), the sheet's `voxel_size_nm` cell, and the calibration fibseg writes (HDF5
`element_size_um`, ImageJ TIFF)."""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

from .errors import InputError

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


class FoundVoxel(NamedTuple):
    """What a volume's own metadata gives: the (z, y, x) size in nm, None per axis it does not
    give, and the kind of metadata read (e.g. "ImageJ", "FEI metadata"), None if none."""

    voxel: Voxel
    kind: str | None


NOT_FOUND = FoundVoxel((None, None, None), None)


def unit_nm(unit: object) -> float | None:
    """Nanometres per `unit` (ImageJ, OME and OME-Zarr spellings), None if not a length."""
    if unit is None:
        return None
    text = str(unit).strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ")
    return UNIT_NM.get(text, UNIT_NM.get(text.lower()))


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


def element_size_um(voxel_nm: tuple[float, float, float] | None) -> dict[str, np.ndarray]:
    """The HDF5 attribute `element_size_um` (z, y, x in µm, as Fiji and ilastik read it)."""
    if voxel_nm is None:
        return {}
    return {"element_size_um": np.asarray(voxel_nm, dtype=np.float64) / 1e3}


def axistags_json(axes: str = "zyx") -> str:
    """vigra's `axistags` (JSON) for spatial axes in this order: ilastik reads an HDF5
    dataset's axes from it (without it, it guesses from the shape)."""
    spatial = 2  # vigra.AxisType.Space
    tags = [{"key": key, "typeFlags": spatial, "resolution": 0, "description": ""} for key in axes]
    return json.dumps({"axes": tags})


def hdf5_axes(voxel_nm: tuple[float, float, float] | None) -> dict[str, object]:
    """The attributes of a (z, y, x) HDF5 volume that name its axes and size: `axistags`
    (ilastik) and, with `voxel_nm`, `element_size_um` (Fiji and ilastik)."""
    return {"axistags": axistags_json("zyx"), **element_size_um(voxel_nm)}


def imagej_calibration(voxel_nm: tuple[float, float, float] | None) -> dict[str, object]:
    """`TiffWriter.write` keywords that give an ImageJ stack its voxel size (in nm)."""
    if voxel_nm is None:
        return {"metadata": {"axes": "ZYX"}}
    z, y, x = (float(v) for v in voxel_nm)
    return {
        "resolution": (1 / x, 1 / y),
        "metadata": {"axes": "ZYX", "spacing": z, "unit": "nm"},
    }
