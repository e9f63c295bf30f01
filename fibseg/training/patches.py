"""Patches cut on the fly (§3.5): never materialised, each batch is cut from the regions'
context crops, which stay in memory once (their size does not grow with the samples)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..annotation.regions import RegionSet
from .augment import random_dihedral, rescale_intensity


class PatchSource:
    """Cuts (B, n_xy, n_xy, n_z) patches around sample voxels from the regions' crops."""

    def __init__(self, region_sets: dict[str, RegionSet], samples: pd.DataFrame) -> None:
        self.region_sets = region_sets
        self.samples = samples.reset_index(drop=True)
        self.labels = self.samples["label"].to_numpy(np.float32)
        rows, cys, cxs = [], [], []
        for name in self.samples["dataset"].unique():
            if name not in region_sets:
                raise KeyError(f"samples name data set '{name}' but no regions.h5 was given")
        for sample in self.samples.itertuples():
            regions = region_sets[sample.dataset]
            region = regions.table.iloc[sample.region]
            rows.append(sample.region)
            cys.append(sample.y - region.y + regions.margin_xy)
            cxs.append(sample.x - region.x + regions.margin_xy)
        self.region = np.asarray(rows, np.int64)
        self.cy = np.asarray(cys, np.int64)
        self.cx = np.asarray(cxs, np.int64)
        self.dataset = self.samples["dataset"].to_numpy()

    def __len__(self) -> int:
        return len(self.samples)

    def cut(self, indices: np.ndarray, n_xy: int, n_z: int) -> np.ndarray:
        """Patches of the samples at `indices`, channels last (n_z slices as channels)."""
        half, half_z = n_xy // 2, n_z // 2
        out = np.empty((len(indices), n_z, n_xy, n_xy), np.float32)
        names = self.dataset[indices]
        for name in np.unique(names):
            chosen = np.flatnonzero(names == name)
            regions = self.region_sets[name]
            if half > regions.margin_xy or half_z > regions.margin_z:
                raise ValueError(
                    f"regions.h5 of '{name}' has margins {regions.margin_xy}/"
                    f"{regions.margin_z}, too small for n_xy={n_xy}, n_z={n_z}"
                )
            picked = indices[chosen]
            z0 = regions.margin_z - half_z
            windows = np.lib.stride_tricks.sliding_window_view(
                regions.crops[:, z0 : z0 + n_z], (n_xy, n_xy), axis=(2, 3)
            )
            out[chosen] = windows[
                self.region[picked], :, self.cy[picked] - half, self.cx[picked] - half
            ]
        return np.moveaxis(out, 1, -1)


def make_sequence(
    source: PatchSource,
    n_xy: int,
    n_z: int,
    batch_size: int,
    seed: int,
    augment: dict | None = None,
    shuffle: bool = False,
    max_batches: int | None = None,
):
    """A Keras PyDataset of (patches, labels) batches; shuffled and augmented per epoch."""
    import keras

    class PatchBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False, max_queue_size=4)
            self.epoch = 0
            self.order = np.arange(len(source))
            self.on_epoch_end()

        def __len__(self) -> int:
            batches = -(-len(source) // batch_size)
            return min(batches, max_batches) if max_batches else batches

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch
            self.on_epoch_end()

        def on_epoch_end(self) -> None:
            if shuffle:
                self.order = np.random.default_rng([seed, self.epoch]).permutation(len(source))

        def __getitem__(self, index: int):
            chosen = self.order[index * batch_size : (index + 1) * batch_size]
            patches = source.cut(chosen, n_xy, n_z)
            if augment:
                rng = np.random.default_rng([seed, self.epoch, index])
                patches = rescale_intensity(
                    patches, augment["a"], augment["b"], augment["probability"], rng
                )
                patches = random_dihedral(patches, rng)
            return patches, source.labels[chosen]

    return PatchBatches()
