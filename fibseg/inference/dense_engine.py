"""The dense engine: the grid's classifier evaluated fully convolutionally, through its twin
(fibseg.networks.twin). Slices are processed in tiles with a halo, so memory stays bounded and
the seams are exact. For `valid` models it equals the sliding window up to float rounding; for
`same` models it is an approximation (the zero padding inside a patch is not reproduced), used
only on request (fibseg.networks.model.check_dense_padding).
"""

from __future__ import annotations

import numpy as np

from ..networks.model import model_geometry
from ..networks.twin import dense_twin, interleave_fragments, tile_sides, twin_geometry
from ..networks.windows import Roi, mirrored_source, region_of_interest
from ..runtime.progress import report_tile


class DenseEngine:
    """Dense scores of whole slices, tile by tile with an exact halo."""

    def __init__(self, model, tile: int = 1024) -> None:
        self.n_xy, self.n_z, self.padding = model_geometry(model)
        self.twin = dense_twin(model)
        self.tile = tile
        self.field, self.offset = twin_geometry(self.n_xy, self.padding)
        self.before = self.n_xy // 2 + self.offset

    def scores(self, stack: np.ndarray, roi: Roi | None = None) -> np.ndarray:
        """Scores of the centre slice of an (n_z, y, x) stack over `roi`."""
        if stack.shape[0] != self.n_z:
            raise ValueError(f"the stack has {stack.shape[0]} slices, the model takes {self.n_z}")
        y0, y1, x0, x1 = region_of_interest(stack, roi)
        rows, tile_h = tile_sides(y1 - y0, self.tile)
        cols, tile_w = tile_sides(x1 - x0, self.tile)
        halo = self.field - 1
        # Mirror-pad to whole tiles plus the halo, so every call has the same shape.
        source = np.moveaxis(
            mirrored_source(
                stack,
                range(y0 - self.before, y0 + rows * tile_h + halo - self.before),
                range(x0 - self.before, x0 + cols * tile_w + halo - self.before),
            ),
            0,
            -1,
        )
        out = np.empty((rows * tile_h, cols * tile_w), np.float32)
        for row in range(rows):
            for col in range(cols):
                ty, tx = row * tile_h, col * tile_w
                window = source[None, ty : ty + tile_h + halo, tx : tx + tile_w + halo]
                fragments = np.asarray(self.twin.predict_on_batch(window))[..., 0]
                out[ty : ty + tile_h, tx : tx + tile_w] = interleave_fragments(fragments)
                report_tile(row * cols + col + 1, rows * cols)
        return out[: y1 - y0, : x1 - x0]
