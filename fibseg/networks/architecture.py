"""One object per network: the `Architecture` base class, the `Geometry` of a network, and
the registration of architectures by name (looked up through fibseg.networks.registry).

An architecture knows how to build its network, the sizes it takes (the grid's n_xy and n_z,
what `padding` means for it, the context it needs around a region), how it is recognised in a
loaded model or a `.keras` file, which training loop and which inference engine it uses, and
how it describes itself in a bundle. The training loops and the inference engines live in
higher layers (fibseg.training, fibseg.inference): they are handed to the architecture as
`Loops` and `Engines`, and it picks its own, so that nothing above asks which network it has.

A new architecture is one module that subclasses `Architecture` and calls `register`, plus
its import in fibseg.networks.registry (a test may register one of its own).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from ..io.errors import LimitError

Scorer = Callable[..., np.ndarray]


class ModelConfigError(LimitError):
    """A neighbourhood size the architecture (or the grid) cannot take."""


def check_slices(n_z: int, key: str = "grid.n_z") -> None:
    """The slice to classify is the centre of its n_z slices: n_z is odd (CNN and forest)."""
    if n_z % 2 == 0:
        raise ModelConfigError(
            f"n_z={n_z} must be odd: the slice to classify is the centre of its n_z slices.",
            "use odd sizes such as 1, 3, 5, 7, 9, 11.",
            key,
        )


@dataclass(frozen=True)
class Geometry:
    """What a network takes, with the architecture that says what the sizes mean: n_z slices
    in; n_xy the side of its neighbourhood (patch CNN), of its training tiles (a grid cell of
    the U-Net) or 0 (a loaded U-Net, which takes slices of any size); `padding` as the
    architecture defines it (the patch CNN's 'same' or 'valid', 'unknown' for a model of no
    known architecture; 'unet' for the U-Net, as its records have always said)."""

    architecture: Architecture
    n_xy: int
    n_z: int
    padding: str

    def record(self) -> dict[str, Any]:
        """n_xy, n_z and padding, as rule check_model and the bundles record them."""
        return {"n_xy": self.n_xy, "n_z": self.n_z, "padding": self.padding}


class Engines(Protocol):
    """The inference engines of fibseg.inference, handed to `Architecture.scorer`."""

    def sliding(self, model, inference) -> Scorer:
        """One mirror-padded patch per voxel (fibseg.inference.sliding): any patch model."""

    def dense(self, model, inference, tile: int | None) -> Scorer:
        """The patch CNN's fully convolutional twin (fibseg.inference.dense_engine)."""

    def unet(self, model, inference, tile: int | None) -> Scorer:
        """Whole slices through the U-Net in exact tiles (fibseg.inference.unet_engine)."""


class Loops(Protocol):
    """The training loops of one run (fibseg.training.train), handed to
    `Architecture.epochs`; each returns an object with `counts`, `compile(model, optimizer)`
    and `fit(model, epoch)`."""

    def patches(self):
        """Batches of the sampled patches (the paper's way)."""

    def dense(self):
        """Tiles of the regions through the patch CNN's twin (`training.mode: dense`)."""

    def unet_tiles(self):
        """Tiles of n_xy x n_xy around the labels (fibseg.training.unet_tiles)."""


class Architecture(ABC):
    """A network of fibseg, registered under `name`. A subclass defines every abstract method
    (it cannot be made otherwise)."""

    name: ClassVar[str]
    # True for the architecture that a model no other one recognises is taken for
    fallback: ClassVar[bool] = False

    # --- the network ---------------------------------------------------------------------

    @abstractmethod
    def build(self, n_xy: int, n_z: int, padding: str, hyper: Mapping[str, float], seed: int):
        """A fresh, uncompiled Keras model of a grid cell; `hyper` one draw of the random
        search (fibseg.networks.model.draw_hyperparameters)."""

    @abstractmethod
    def check_grid(self, n_xys: Sequence[int], n_zs: Sequence[int], padding: str) -> None:
        """Raise a LimitError (key grid.n_xy, grid.n_z, ...) for sizes that give no network."""

    @abstractmethod
    def grid_geometry(self, n_xy: int, n_z: int, padding: str) -> Geometry:
        """The geometry of the network of a grid cell, with the config's model.padding."""

    @abstractmethod
    def context_xy(self, n_xy: int) -> int:
        """Pixels of context kept around a region for a grid cell of this n_xy."""

    # --- recognising a model -------------------------------------------------------------

    @abstractmethod
    def owns(self, model) -> bool:
        """Whether a loaded Keras model is of this architecture."""

    @abstractmethod
    def owns_description(self, description: Mapping) -> bool:
        """Whether a `.keras` file's config.json ("config") is of this architecture."""

    @abstractmethod
    def geometry(self, model) -> Geometry:
        """The geometry of a loaded model of this architecture."""

    @abstractmethod
    def file_geometry(self, description: Mapping) -> Geometry:
        """The geometry read from a `.keras` file's config.json, without loading it."""

    # --- training ------------------------------------------------------------------------

    @abstractmethod
    def check_training(self, mode: str, unlabelled_method: str, padding: str) -> None:
        """Raise a LimitError for training settings this network cannot train with."""

    @abstractmethod
    def epochs(self, loops: Loops, mode: str):
        """The training loop of a run (one of `loops`), for `training.mode`."""

    # --- inference -----------------------------------------------------------------------

    @abstractmethod
    def check_engine(self, engine: str, allow_approximate_dense: bool, padding: str) -> None:
        """Raise a LimitError (key inference.engine) if the configured engine cannot score
        the network of the grid."""

    @abstractmethod
    def check_scorable(self, model, path: str, inference) -> Geometry:
        """The model's geometry, or an InputError naming `path` if fibseg cannot score it
        with the configured engine."""

    @abstractmethod
    def scorer(
        self, model, geometry: Geometry, engine: str, inference, tile: int | None, engines: Engines
    ) -> Scorer:
        """A function (stack, roi=None) -> scores of the centre slice, for `engine`
        (inference.engine) or the architecture's own engine."""

    @abstractmethod
    def exact_scorer(self, model, geometry: Geometry, inference, engines: Engines) -> Scorer | None:
        """Where the configured engine approximates the network, the exact scorer to measure
        the approximation against; else None."""

    @abstractmethod
    def predict_work_bytes(self, geometry: Geometry, height: int, width: int, inference) -> int:
        """Bytes of the engine's working memory for a slice of height x width (the DAG's
        memory estimate of predict_slices, fibseg.pipeline.dag)."""

    # --- bundles -------------------------------------------------------------------------

    def describe(self, geometry: Geometry) -> dict[str, Any]:
        """The entry of a model file in a bundle's description (its "architecture" list)."""
        return {"network": self.name, **geometry.record()}

    def __repr__(self) -> str:
        return f"<architecture {self.name}>"


REGISTERED: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    """Make `architecture` known by its name (model.architecture in the config)."""
    if architecture.name in REGISTERED:
        raise ValueError(f"an architecture named '{architecture.name}' is registered already")
    REGISTERED[architecture.name] = architecture
    return architecture


def unregister(name: str) -> None:
    """Forget the architecture `name` (for tests that register one of their own)."""
    REGISTERED.pop(name, None)
