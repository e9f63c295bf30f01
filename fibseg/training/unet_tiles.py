"""The tiles of U-Net training: n_xy x n_xy windows of the regions' context crops around their
labelled voxels, with the labels where there are labels and weight 0 everywhere else (the
unlabelled voxels, 255, of rectangles and painted annotations alike).

A training tile is moved at random so that its labels sit anywhere inside it, and gets one of
the 8 flips and rotations in x-y and the paper's intensity rescaling (§3.5); a validation
tile is centred on its labels and not augmented. Beyond a region's crop the context is
mirrored. Regions larger than a tile are covered by several tiles.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

from ..annotation.regions import IGNORE, RegionSet, known
from ..networks.windows import mirror_index
from .augment import rescale_intensity
from .tiles import (
    chosen_regions,
    joint_dihedral,
    labelled_and_weights,
    tile_origins,
    voxel_weights,
)


def cut_unet_tile(
    regions: RegionSet,
    region: int,
    top: int,
    left: int,
    side: int,
    n_z: int,
    code: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Input (side, side, n_z), labels and 0/1 mask (side, side) of the tile whose top-left
    pixel is (`top`, `left`) in the region's label frame, under the dihedral `code`."""
    if n_z // 2 > regions.margin_z:
        raise ValueError(
            f"regions.h5 of '{regions.dataset}' keeps {regions.margin_z} slices on each side, "
            f"too few for n_z={n_z}"
        )
    margin = regions.margin_xy
    crop = regions.crops[
        region, regions.margin_z - n_z // 2 : regions.margin_z + n_z // 2 + 1
    ].astype(np.float32)
    rows, cols = np.arange(top, top + side), np.arange(left, left + side)
    ys = mirror_index(rows + margin, crop.shape[1])
    xs = mirror_index(cols + margin, crop.shape[2])
    image = np.moveaxis(crop[:, ys][:, :, xs], 0, -1)
    height, width = regions.labels.shape[1:]
    inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None]
    given = np.full((side, side), IGNORE, np.uint8)
    given[inside] = regions.labels[region][
        np.clip(rows, 0, height - 1)[:, None], np.clip(cols, 0, width - 1)[None]
    ][inside]
    mask = known(given).astype(np.float32)
    labels = np.where(mask > 0, given, 0).astype(np.float32)
    image, (labels, mask) = joint_dihedral(image, (labels, mask), code)
    return image, labels, mask


def labelled_extent(regions: RegionSet, region: int, y0: int, x0: int, side: int) -> tuple:
    """(top, bottom, left, right) of the labelled voxels in the tile at (y0, x0), label frame."""
    window = known(regions.labels[region, y0 : y0 + side, x0 : x0 + side])
    rows, cols = np.flatnonzero(window.any(axis=1)), np.flatnonzero(window.any(axis=0))
    return y0 + rows[0], y0 + rows[-1] + 1, x0 + cols[0], x0 + cols[-1] + 1


def tile_position(extent: tuple, side: int, rng: np.random.Generator | None) -> tuple[int, int]:
    """Top-left of a tile holding the labelled `extent`: anywhere that keeps it inside (at
    random with `rng`), centred without."""
    top, bottom, left, right = extent
    spare_y, spare_x = side - (bottom - top), side - (right - left)
    if rng is None:
        return top - spare_y // 2, left - spare_x // 2
    return top - int(rng.integers(0, spare_y + 1)), left - int(rng.integers(0, spare_x + 1))


@functools.cache
def _unet_tiles_class():
    import keras

    class UnetTiles(keras.utils.PyDataset):
        """Batches (inputs, labels (.., 1), weights) of `tiles_per_batch` U-Net tiles of the
        selected regions, `max_batches` per epoch (one pass over the tiles without it),
        reshuffled per epoch (`set_epoch`) from `seed`; with `augment` ({a, b,
        probability}) moved, flipped and rescaled per tile, without it centred."""

        def __init__(
            self,
            region_sets: Mapping[str, RegionSet],
            selection: Mapping[str, Sequence[int]],
            side: int,
            n_z: int,
            tiles_per_batch: int,
            seed: int,
            augment: dict | None = None,
            weights: tuple[float, float] | None = None,
            max_batches: int | None = None,
        ) -> None:
            super().__init__(workers=1, use_multiprocessing=False, max_queue_size=4)
            self.region_sets, self.side, self.n_z = region_sets, side, n_z
            self.tiles_per_batch, self.seed, self.augment = tiles_per_batch, seed, augment
            self.max_batches = max_batches
            chosen = chosen_regions(selection, "U-Net training")
            self.extents = [
                (name, region, labelled_extent(region_sets[name], region, y0, x0, side))
                for name, indices in chosen.items()
                for region, y0, x0 in tile_origins(region_sets[name], indices, side)
            ]
            self.labelled, self.weights = labelled_and_weights(region_sets, chosen, weights)
            self.epoch = 0
            self.on_epoch_end()

        def __len__(self) -> int:
            return self.max_batches or -(-len(self.extents) // self.tiles_per_batch)

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch
            self.on_epoch_end()

        def on_epoch_end(self) -> None:
            tiles = len(self.extents)
            passes = -(-len(self) * self.tiles_per_batch // tiles)
            if self.augment:
                rng = np.random.default_rng([self.seed, self.epoch])
                self.order = np.concatenate([rng.permutation(tiles) for _ in range(passes)])
            else:
                self.order = np.tile(np.arange(tiles), passes)

        def __getitem__(self, index: int):
            chosen = self.order[index * self.tiles_per_batch : (index + 1) * self.tiles_per_batch]
            rng = np.random.default_rng([self.seed, self.epoch, index]) if self.augment else None
            cut = []
            for k in chosen:
                name, region, extent = self.extents[k]
                top, left = tile_position(extent, self.side, rng)
                code = int(rng.integers(0, 8)) if rng is not None else 0
                cut.append(
                    cut_unet_tile(
                        self.region_sets[name], region, top, left, self.side, self.n_z, code
                    )
                )
            inputs, labels, mask = (np.stack(parts) for parts in zip(*cut, strict=True))
            if rng is not None:
                augment = self.augment
                inputs = rescale_intensity(
                    inputs, augment["a"], augment["b"], augment["probability"], rng
                )
            return inputs, labels[..., None], voxel_weights(labels, mask, self.weights)

    return UnetTiles


class UnetEpochs:
    """U-Net training (`model.architecture: unet`): tiles of n_xy x n_xy around the labels of
    the train regions (fibseg.training.unet_tiles), the loss on every labelled voxel, pore and
    solid weighted equally; `training.steps_per_epoch` steps of `training.tiles_per_batch`
    tiles per epoch (one pass over the tiles without it). Validation on centred tiles of the
    val regions."""

    def __init__(self, region_sets, split_csv, side, n_z, seed, augment, training):
        import pandas as pd

        from .tiles import region_selection

        table = pd.read_csv(split_csv)
        common = {"side": side, "n_z": n_z, "tiles_per_batch": training.tiles_per_batch}
        self.train_tiles = _unet_tiles_class()(
            region_sets,
            region_selection(table, "train"),
            seed=seed,
            augment=augment,
            max_batches=training.steps_per_epoch,
            **common,
        )
        self.val_tiles = _unet_tiles_class()(
            region_sets, region_selection(table, "val"), seed=seed, **common
        )
        self.counts = {
            "train_samples": self.train_tiles.labelled,
            "val_samples": self.val_tiles.labelled,
        }

    def compile(self, model, optimizer) -> None:
        """The loss and metrics over the labelled voxels of the tiles."""
        from .dense import dense_loss, dense_metrics

        model.compile(optimizer=optimizer, loss=dense_loss(), weighted_metrics=dense_metrics())

    def fit(self, model, epoch: int) -> dict[str, list[float]]:
        from .dense import fit_dense_epoch

        return fit_dense_epoch(model, self.train_tiles, self.val_tiles, epoch)


def __getattr__(name: str):
    if name == "UnetTiles":  # a keras class, made on first use so that importing is cheap
        return _unet_tiles_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
