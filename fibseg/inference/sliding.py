"""The paper's sliding-window engine (§3.8): one mirror-padded patch per voxel, scored in
batches. Exact for any model of the grid."""

from __future__ import annotations

import numpy as np

from ..networks.model import model_geometry
from ..networks.windows import Roi, mirrored_source, region_of_interest
from ..runtime.progress import report_tile


def sliding_scores(
    model,
    stack: np.ndarray,
    extract_batch: int = 65536,
    predict_batch: int = 2048,
    roi: Roi | None = None,
) -> np.ndarray:
    """Scores of the centre slice of an (n_z, y, x) stack, one patch per voxel, over `roi`."""
    n_xy, n_z, _ = model_geometry(model)
    if stack.shape[0] != n_z:
        raise ValueError(f"the stack has {stack.shape[0]} slices, the model takes {n_z}")
    half = n_xy // 2
    y0, y1, x0, x1 = region_of_interest(stack, roi)
    height, width = y1 - y0, x1 - x0
    padded = mirrored_source(
        stack, range(y0 - half, y1 + n_xy - 1 - half), range(x0 - half, x1 + n_xy - 1 - half)
    )
    windows = np.lib.stride_tricks.sliding_window_view(padded, (n_xy, n_xy), axis=(1, 2))
    scores = np.empty(height * width, np.float32)
    batches = -(-height * width // extract_batch)
    for start in range(0, height * width, extract_batch):
        index = np.arange(start, min(start + extract_batch, height * width))
        patches = np.ascontiguousarray(
            np.moveaxis(windows[:, index // width, index % width], 0, -1)
        )
        for first in range(0, len(index), predict_batch):
            batch = patches[first : first + predict_batch]
            scores[start + first : start + first + len(batch)] = np.asarray(
                model.predict_on_batch(batch)
            ).reshape(-1)
        report_tile(start // extract_batch + 1, batches)
    return scores.reshape(height, width)
