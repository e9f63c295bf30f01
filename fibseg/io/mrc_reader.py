"""The MRC reader (.mrc, .rec, .st, ...): memory-mapped by mrcfile; voxel size from the
header's `voxel_size` (Å)."""

from __future__ import annotations

from contextlib import ExitStack

from .formats import Reader
from .voxel_size import NOT_FOUND, FoundVoxel


def open_mrc(
    path: str, inner: str | None, files: list[str], dataset_name: str | None, stack: ExitStack
):
    """The memory-mapped data of the file."""
    import mrcfile

    return stack.enter_context(mrcfile.mmap(path, mode="r")).data


def mrc_voxel_size_nm(path: str, inner: str | None, files: list[str], data) -> FoundVoxel:
    """(z, y, x) in nm from the header's `voxel_size` (Å); None where it is 0."""
    import mrcfile

    with mrcfile.mmap(path, mode="r") as mrc:
        size = mrc.voxel_size
        voxel = tuple(float(size[a]) / 10 if size[a] > 0 else None for a in "zyx")
    return FoundVoxel(voxel, "MRC header") if any(voxel) else NOT_FOUND


READER = Reader(open=open_mrc, voxel_size_nm=mrc_voxel_size_nm)
