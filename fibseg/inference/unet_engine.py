"""The U-Net's engine: whole slices scored in tiles that give exactly the whole slice's scores.

The slice (or the region of interest) is mirror-padded by the network's halo on every side,
and up to whole tiles, from an origin that does not depend on the tile size. Each tile is cut
from that padded slice at a multiple of the pooling alignment, with the halo on every side
that the padded slice has, and keeps only its own outputs. An output voxel sees no further
than the receptive radius (at most the halo), so it sees the same inputs, with the pooling
grid in the same place, whether its tile is the whole slice or a small one: tiled = whole up to
float rounding (tests/test_unet.py).
"""

from __future__ import annotations

import numpy as np

from ..networks.unet import ALIGN, halo
from ..networks.windows import Roi, mirrored_source, region_of_interest
from ..runtime.progress import report_tile


def aligned(size: int) -> int:
    """`size` rounded up to a multiple of the pooling alignment."""
    return -(-size // ALIGN) * ALIGN


class UnetEngine:
    """Scores of whole slices through fibseg's U-Net, `tile` x `tile` outputs at a time."""

    def __init__(self, model, tile: int = 1024) -> None:
        self.model = model
        self.n_z = int(model.input_shape[-1])
        self.tile = max(aligned(tile), ALIGN)
        self.halo = halo()

    def scores(self, stack: np.ndarray, roi: Roi | None = None) -> np.ndarray:
        """Scores of the centre slice of an (n_z, y, x) stack over `roi`."""
        if stack.shape[0] != self.n_z:
            raise ValueError(f"the stack has {stack.shape[0]} slices, the model takes {self.n_z}")
        y0, y1, x0, x1 = region_of_interest(stack, roi)
        height, width = y1 - y0, x1 - x0
        tile_h, tile_w = min(self.tile, aligned(height)), min(self.tile, aligned(width))
        rows, cols = -(-height // tile_h), -(-width // tile_w)
        source = np.moveaxis(
            mirrored_source(
                stack,
                range(y0 - self.halo, y0 + rows * tile_h + self.halo),
                range(x0 - self.halo, x0 + cols * tile_w + self.halo),
            ),
            0,
            -1,
        )
        out = np.empty((rows * tile_h, cols * tile_w), np.float32)
        span_h, span_w = tile_h + 2 * self.halo, tile_w + 2 * self.halo
        for row in range(rows):
            for col in range(cols):
                ty, tx = row * tile_h, col * tile_w
                window = source[None, ty : ty + span_h, tx : tx + span_w]
                scores = np.asarray(self.model.predict_on_batch(window))[0, ..., 0]
                out[ty : ty + tile_h, tx : tx + tile_w] = scores[
                    self.halo : self.halo + tile_h, self.halo : self.halo + tile_w
                ]
                report_tile(row * cols + col + 1, rows * cols)
        return out[:height, :width]
