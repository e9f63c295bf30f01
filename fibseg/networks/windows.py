"""Neighbourhoods at the edges: indices mirrored back into a volume, mirror-padded sources,
the slices around a slice, and the region of a margin window."""

from __future__ import annotations

import numpy as np

Roi = tuple[int, int, int, int]


def mirror_index(index: np.ndarray, size: int) -> np.ndarray:
    """Map indices outside [0, size) back inside by mirroring without repeating the edge."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    folded = np.mod(index, period)
    return np.where(folded < size, folded, period - folded)


def neighbour_slices(z: int, n_z: int, depth: int) -> np.ndarray:
    """Indices of the n_z slices centred on z, mirrored at the volume's ends."""
    return mirror_index(np.arange(z - n_z // 2, z + n_z // 2 + 1), depth)


def region_of_interest(stack: np.ndarray, roi: Roi | None) -> Roi:
    """(y0, y1, x0, x1) of the outputs wanted; the whole slice by default."""
    return roi if roi is not None else (0, stack.shape[1], 0, stack.shape[2])


def mirrored_source(stack: np.ndarray, rows: range, cols: range) -> np.ndarray:
    """stack[:, rows][:, :, cols], with indices outside the stack mirrored back in."""
    ys = mirror_index(np.asarray(rows), stack.shape[1])
    xs = mirror_index(np.asarray(cols), stack.shape[2])
    return stack.astype(np.float32)[:, ys][:, :, xs]


def region_in_window(window: np.ndarray, margin: int, height: int, width: int) -> np.ndarray:
    """The region of a window that holds it plus `margin` pixels on every side."""
    return window[..., margin : margin + height, margin : margin + width]
