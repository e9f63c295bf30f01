"""The Zarr and OME-Zarr reader: `store.zarr[:/path]`, an array or a group with OME-Zarr
multiscales (its full-resolution level); voxel size from the multiscales' scale and axis
units."""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np

from .formats import Reader
from .voxel_size import NOT_FOUND, FoundVoxel, Voxel, unit_nm


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


def open_store(
    path: str, inner: str | None, files: list[str], dataset_name: str | None, stack: ExitStack
):
    """The array of the store at `inner` (`open_zarr`)."""
    return open_zarr(path, inner)[0]


def store_voxel_size_nm(path: str, inner: str | None, files: list[str], data) -> FoundVoxel:
    """The voxel size of the OME-Zarr multiscales (`zarr_voxel_size_nm`)."""
    voxel = zarr_voxel_size_nm(path, inner)
    return FoundVoxel(voxel, "OME-Zarr scale") if any(voxel) else NOT_FOUND


READER = Reader(open=open_store, voxel_size_nm=store_voxel_size_nm)
