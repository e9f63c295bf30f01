"""The tiles of dense training: labelled regions cut into tiles of the twin's input and
output sizes, under a joint dihedral transform, their class weights, and `DenseTiles`, the
keras data set of an epoch (built on first access, so that importing is cheap)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

from ..annotation.regions import RegionSet, known
from ..networks.twin import fragment_layout, tile_sides, twin_geometry
from ..networks.windows import mirror_index
from .augment import rescale_intensity

DEFAULT_TILE = 128  # output side of a training tile; larger regions are cut into tiles


def dihedral_2d(array: np.ndarray, code: int) -> np.ndarray:
    """The transform `code` of fibseg.augment.dihedral on the first two axes: a left-right
    flip when code >= 4, then code % 4 quarter turns."""
    if code >= 4:
        array = array[:, ::-1]
    return np.ascontiguousarray(np.rot90(array, int(code) % 4, axes=(0, 1)))


def joint_dihedral(
    image: np.ndarray, maps: Sequence[np.ndarray], code: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The same dihedral transform on an (H, W, n_z) input tile and its (h, w) maps."""
    return dihedral_2d(image, code), [dihedral_2d(m, code) for m in maps]


def reversed_axes(code: int) -> tuple[bool, bool]:
    """Whether the transform reads the source rows / columns backwards."""
    corner = int(dihedral_2d(np.arange(4).reshape(2, 2), code)[0, 0])
    return corner // 2 == 1, corner % 2 == 1


def tile_side(extents: Sequence[int], tile: int = DEFAULT_TILE) -> int:
    """One output side for every tile (a batch needs one shape): that of the largest region
    extent cut into equal tiles of at most `tile` (multiples of 16)."""
    return max(tile_sides(int(extent), tile)[1] for extent in extents)


def tile_origins(regions: RegionSet, indices: Sequence[int], side: int) -> list[tuple]:
    """(region, y0, x0) of the tiles covering each region, in the region's label frame;
    tiles without a labelled voxel (all IGNORE) are left out."""
    height, width = regions.labels.shape[1:]
    return [
        (int(region), y0, x0)
        for region in indices
        for y0 in range(0, height, side)
        for x0 in range(0, width, side)
        if known(regions.labels[region, y0 : y0 + side, x0 : x0 + side]).any()
    ]


def check_margins(regions: RegionSet, n_xy: int, n_z: int) -> None:
    """The crops must hold every labelled voxel's patch (as PatchSource.cut requires)."""
    if n_xy // 2 > regions.margin_xy or n_z // 2 > regions.margin_z:
        raise ValueError(
            f"regions.h5 of '{regions.dataset}' has margins {regions.margin_xy}/"
            f"{regions.margin_z}, too small for n_xy={n_xy}, n_z={n_z}"
        )
    if regions.crops.ndim != 4:
        raise ValueError(f"the regions of '{regions.dataset}' were read without their crops")


def cut_tile(
    regions: RegionSet, region: int, y0: int, x0: int, side: int, n_xy: int, n_z: int, code: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Input window (W, W, n_z), labels (side, side) and mask (side, side) of one tile, with
    the dihedral transform `code` applied jointly.

    Output p stands for the labelled voxel (y0, x0) + p, whose patch starts n_xy // 2 before
    it: the window starts there (DenseEngine's `before`, offset 0 for `valid`) and spans
    side + field - 1. The twin sees [p, p + field) of it, which for n_xy > field is not centred
    on the voxel; so along an axis that the transform reverses the window starts
    2 (n_xy // 2) + 1 - field later, and after the transform output p' again sees exactly the
    transformed patch of its voxel (what the patch path sees after fibseg.augment.dihedral).
    Beyond the crop the context is mirrored; it only reaches unlabelled (mask 0) outputs."""
    half, half_z = n_xy // 2, n_z // 2
    field, _ = twin_geometry(n_xy, "valid")
    window = side + field - 1
    shift = 2 * half + 1 - field
    reverse_y, reverse_x = reversed_axes(code)
    margin = regions.margin_xy
    crop = regions.crops[region, regions.margin_z - half_z : regions.margin_z + half_z + 1]
    ys = mirror_index(np.arange(window) + margin + y0 - half + shift * reverse_y, crop.shape[1])
    xs = mirror_index(np.arange(window) + margin + x0 - half + shift * reverse_x, crop.shape[2])
    image = np.moveaxis(crop[:, ys][:, :, xs], 0, -1).astype(np.float32)
    labels = np.zeros((side, side), np.float32)
    mask = np.zeros((side, side), np.float32)
    given = regions.labels[region, y0 : y0 + side, x0 : x0 + side]
    labelled = known(given)
    labels[: given.shape[0], : given.shape[1]] = np.where(labelled, given, 0)
    mask[: given.shape[0], : given.shape[1]] = labelled
    image, (labels, mask) = joint_dihedral(image, (labels, mask), code)
    return image, labels, mask


def class_weights(labels: np.ndarray) -> tuple[float, float]:
    """(w_pore, w_solid) = 0.5 N / N_c, so that both classes weigh half of the loss, as the
    paper's 50/50 stratified sampling makes them. IGNORE voxels do not count."""
    labels = np.asarray(labels).ravel()
    labels = labels[known(labels)]
    total = labels.size
    counts = [int(np.count_nonzero(labels == c)) for c in (0, 1)]
    if min(counts) == 0:
        raise ValueError(f"class weights need both classes; counts pore/solid {counts}")
    return 0.5 * total / counts[0], 0.5 * total / counts[1]


def voxel_weights(
    labels: np.ndarray, mask: np.ndarray, weights: tuple[float, float], dtype=np.float32
) -> np.ndarray:
    """Per-voxel sample weights: the class weight where labelled, 0 elsewhere."""
    return (mask * np.where(labels >= 0.5, weights[1], weights[0])).astype(dtype)


def chosen_regions(selection: Mapping[str, Sequence[int]], what: str) -> dict[str, list[int]]:
    """The data sets of `selection` with at least one region; an error when there are none."""
    chosen = {name: list(indices) for name, indices in selection.items() if indices}
    if not chosen:
        raise ValueError(f"no region selected for {what}")
    return chosen


def labelled_and_weights(
    region_sets: Mapping[str, RegionSet],
    chosen: Mapping[str, Sequence[int]],
    weights: tuple[float, float] | None = None,
) -> tuple[int, tuple[float, float]]:
    """How many voxels of the chosen regions are labelled, and the class weights: `weights`,
    or by default `class_weights` of those labels."""
    labels = np.concatenate(
        [region_sets[name].labels[indices].ravel() for name, indices in chosen.items()]
    )
    labelled = int(np.count_nonzero(known(labels)))
    return labelled, weights if weights is not None else class_weights(labels)


@functools.cache
def _dense_tiles_class():
    import keras

    class DenseTiles(keras.utils.PyDataset):
        """Batches (inputs, fragment labels (.., 1), fragment weights) of `tiles_per_batch`
        tiles of the selected regions. One epoch visits every tile, so every labelled voxel,
        once (or runs `max_batches` steps, see `__len__`); shuffled per epoch (`set_epoch`)
        and augmented per tile with seeded generators.

        `selection` maps data set names to region numbers. `weights` are the class weights;
        by default `class_weights` of the selection's own labels."""

        def __init__(
            self,
            region_sets: Mapping[str, RegionSet],
            selection: Mapping[str, Sequence[int]],
            n_xy: int,
            n_z: int,
            tiles_per_batch: int,
            seed: int,
            augment: dict | None = None,
            shuffle: bool = False,
            tile: int = DEFAULT_TILE,
            side: int | None = None,
            weights: tuple[float, float] | None = None,
            max_batches: int | None = None,
        ) -> None:
            super().__init__(workers=1, use_multiprocessing=False, max_queue_size=4)
            self.region_sets = region_sets
            self.n_xy, self.n_z = n_xy, n_z
            self.tiles_per_batch = tiles_per_batch
            self.seed, self.augment, self.shuffle = seed, augment, shuffle
            self.max_batches = max_batches
            chosen = chosen_regions(selection, "dense training")
            for name in chosen:
                check_margins(region_sets[name], n_xy, n_z)
            extents = [e for name in chosen for e in region_sets[name].labels.shape[1:]]
            self.side = side or tile_side(extents, tile)
            self.field, _ = twin_geometry(n_xy, "valid")
            self.origins = [
                (name, *origin)
                for name, indices in chosen.items()
                for origin in tile_origins(region_sets[name], indices, self.side)
            ]
            self.labelled, self.weights = labelled_and_weights(region_sets, chosen, weights)
            self.epoch = 0
            self.on_epoch_end()

        def __len__(self) -> int:
            """One pass over the tiles, or exactly `max_batches` steps: fewer, or more by
            going round again (each pass in a new shuffled order)."""
            return self.max_batches or -(-len(self.origins) // self.tiles_per_batch)

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch
            self.on_epoch_end()

        def on_epoch_end(self) -> None:
            tiles = len(self.origins)  # one pass (its last batch may be short), or enough
            passes = -(-len(self) * self.tiles_per_batch // tiles) if self.max_batches else 1
            if self.shuffle:
                rng = np.random.default_rng([self.seed, self.epoch])
                self.order = np.concatenate([rng.permutation(tiles) for _ in range(passes)])
            else:
                self.order = np.tile(np.arange(tiles), passes)

        def tiles(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """Batch `index` as (inputs, labels, weights) maps (B, side, side), not fragments."""
            chosen = self.order[index * self.tiles_per_batch : (index + 1) * self.tiles_per_batch]
            rng = np.random.default_rng([self.seed, self.epoch, index])
            codes = rng.integers(0, 8, len(chosen)) if self.augment else np.zeros(len(chosen), int)
            cut = [
                cut_tile(self.region_sets[name], r, y0, x0, self.side, self.n_xy, self.n_z, c)
                for (name, r, y0, x0), c in zip(
                    (self.origins[i] for i in chosen), codes.tolist(), strict=True
                )
            ]
            inputs, labels, mask = (np.stack(parts) for parts in zip(*cut, strict=True))
            if self.augment:
                augment = self.augment
                inputs = rescale_intensity(
                    inputs, augment["a"], augment["b"], augment["probability"], rng
                )
            return inputs, labels, voxel_weights(labels, mask, self.weights)

        def __getitem__(self, index: int):
            inputs, labels, weights = self.tiles(index)
            return inputs, fragment_layout(labels)[..., None], fragment_layout(weights)

    return DenseTiles


def __getattr__(name: str):
    if name == "DenseTiles":  # a keras class, made on first use so that importing is cheap
        return _dense_tiles_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def region_selection(table, split: str | None = None) -> dict[str, list[int]]:
    """{data set: region numbers} of a table with `dataset` and `region` columns: split.csv
    (then pass `split`) or a samples CSV such as train.csv (every region with a sample)."""
    if split is not None:
        table = table[table["split"] == split]
    return {
        str(name): sorted(int(r) for r in group["region"].unique())
        for name, group in table.groupby("dataset")
    }
