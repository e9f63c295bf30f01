"""The architectures by name: `architecture(name)` for the config's model.architecture,
`architecture_of(model)` for a loaded Keras model, `architecture_of_description` for a
`.keras` file's config.json. Importing this module registers fibseg's own architectures:
`patch` (fibseg.networks.patch, the paper's CNN) and `unet` (fibseg.networks.unet, the
default's); another is one module that calls `register`, imported here."""

from __future__ import annotations

from collections.abc import Mapping

from . import patch, unet  # noqa: F401  (they register themselves)
from .architecture import (
    REGISTERED,
    Architecture,
    Engines,
    Geometry,
    Loops,
    ModelConfigError,
    register,
    unregister,
)

__all__ = [
    "Architecture",
    "Engines",
    "Geometry",
    "Loops",
    "architecture",
    "architecture_of",
    "architecture_of_description",
    "default_architecture",
    "geometry_of",
    "names",
    "register",
    "unregister",
]


DEFAULT = "patch"  # model.architecture's default in the config schema


def names() -> list[str]:
    """The registered architectures' names, in the order they were registered."""
    return list(REGISTERED)


def architecture(name: str) -> Architecture:
    """The architecture registered as `name`; a LimitError (key model.architecture) names the
    known ones for any other."""
    try:
        return REGISTERED[name]
    except KeyError:
        raise ModelConfigError(
            f"is '{name}', which is no architecture fibseg knows.",
            f"use one of: {', '.join(names())}.",
            "model.architecture",
        ) from None


def default_architecture() -> Architecture:
    """The architecture of a config that names none (the schema's default)."""
    return REGISTERED[DEFAULT]


def _candidates() -> list[Architecture]:
    """Every architecture, the fallback last."""
    return sorted(REGISTERED.values(), key=lambda found: found.fallback)


def architecture_of(model) -> Architecture:
    """The architecture of a loaded Keras model (the fallback's, the patch CNN's, if no other
    recognises it)."""
    return next(found for found in _candidates() if found.owns(model))


def geometry_of(model) -> Geometry:
    """The geometry of a loaded Keras model, with its architecture."""
    return architecture_of(model).geometry(model)


def architecture_of_description(description: Mapping) -> Architecture:
    """The architecture of a `.keras` file from its config.json's "config"."""
    return next(found for found in _candidates() if found.owns_description(description))
