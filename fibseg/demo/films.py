"""The hard films and the random families of the simulator (fibseg.demo.synth): presets of
`SynthSpec` for films with the shine-through of real EC/HPC films (docs/simulator.md)."""

from __future__ import annotations

import numpy as np

from .synth import GEOMETRIES, SynthSpec

# The hard films: what real EC/HPC films show and the easy generator lacks. Pores of two
# scales (smoothing of 3 px and 10 px, the large ones opening 70 % of the porosity); the solid
# behind a pore nearly as bright as the face (0.95 of the contrast one slice behind), almost
# as sharp, with its own grain, fading over 7 slices and seen up to 8 slices deep; faint rims;
# curtaining that starts part-way down the slice and changes from slice to slice; charging
# that changes too; a slow change of brightness between slices; more noise. Chosen against the
# random forest and global Otsu only, never a CNN (docs/simulator.md,
# benchmarks/calibrate_demo.py).
HARD_FILM = {
    "pore_size_xy": 3.0,
    "pore_sizes_xy": (10.0,),
    "pore_shares": (0.7,),
    "texture": 0.1,
    "texture_3d": True,
    "rim": 0.03,
    "shine_layers": 8,
    "shine_strength": 0.95,
    "shine_depth_slices": 7.0,
    "shine_blur_px": 0.3,
    "shine_blur_per_slice": 0.25,
    "noise": 0.075,
    "curtaining": 0.08,
    "curtain_change": 0.3,
    "curtain_onset": 0.5,
    "charging": 0.18,
    "charging_change": 0.3,
    "gain_jitter": 0.03,
}
STYLES = ("easy", "hard")


def hard_film_spec(porosity: float, seed: int = 0, **overrides) -> SynthSpec:
    """The hard films' SynthSpec (HARD_FILM) at a porosity and seed; `overrides` set any other
    field (size, regions, drift) or replace a field of the preset."""
    return SynthSpec(porosity=porosity, seed=seed, **{**HARD_FILM, **overrides})


def styled_spec(style: str = "easy", **fields) -> SynthSpec:
    """A SynthSpec of a style: `easy` (the defaults) or `hard` (`hard_film_spec`); the demo
    config's keys (porosity, seed, size, regions, drift) as `fields`."""
    if style == "easy":
        return SynthSpec(**fields)
    if style == "hard":
        return hard_film_spec(**fields)
    raise ValueError(f"style {style!r}: use one of {', '.join(STYLES)}")


# Randomised families of films (`random_film_spec`): every drawn field uniform in its range,
# drawn in this order. `calibration` spreads around the hard preset and may be looked at when
# choosing the simulator's parameters. `held_out` (finer small pores and larger large ones,
# a weaker shine-through that fades more slowly and reaches 12 slices, lower contrast, less
# Gaussian noise but shot noise, pores stretched in z, stronger curtaining, a drift that
# trends) must not be: no choice of the hard preset, of the calibration family or of any
# method's settings may look at its scores; it tells whether what was tuned carries over.
FAMILIES: dict[str, dict[str, tuple[float, float]]] = {
    "calibration": {
        "porosity": (0.20, 0.50),
        "pore_size_xy": (2.5, 3.5),
        "large_pore_xy": (8.0, 12.0),
        "large_share": (0.5, 0.8),
        "shine_strength": (0.90, 0.98),
        "shine_depth_slices": (5.0, 8.0),
        "contrast": (0.40, 0.50),
        "noise": (0.06, 0.09),
        "curtaining": (0.05, 0.10),
        "charging": (0.12, 0.24),
    },
    "held_out": {
        "porosity": (0.20, 0.50),
        "pore_size_xy": (2.0, 2.5),
        "large_pore_xy": (12.0, 16.0),
        "large_share": (0.3, 0.6),
        "shine_strength": (0.80, 0.90),
        "shine_depth_slices": (8.0, 11.0),
        "contrast": (0.30, 0.40),
        "noise": (0.04, 0.06),
        "shot_noise": (0.05, 0.10),
        "pore_stretch_z": (1.2, 1.8),
        "curtaining": (0.08, 0.14),
        "charging": (0.10, 0.20),
    },
    # The FIB-SEM prior's world (fibseg.pipeline.prior): wide enough to hold the films users
    # image, from easy films (sharp faces, weak shine-through, strong contrast) to films
    # harder than the hard preset (weak contrast, deep and sharp shine-through, changing
    # curtaining and charging). Set from the simulator's physics and the list
    # (porosity 0.1-0.6, pore scales, shine-through depth and strength, blur, contrast,
    # noise, curtaining, charging, the x gradient, residual drift), never from any method's
    # scores on `held_out` or on the spheres simulator.
    "prior": {
        "porosity": (0.10, 0.60),
        "pore_size_xy": (1.5, 5.0),
        "large_pore_xy": (6.0, 18.0),
        "large_share": (0.05, 0.80),
        "shine_strength": (0.30, 1.00),
        "shine_depth_slices": (1.0, 10.0),
        "shine_blur_px": (0.2, 1.2),
        "shine_blur_per_slice": (0.1, 1.0),
        "contrast": (0.20, 0.60),
        "texture": (0.02, 0.12),
        "rim": (0.00, 0.20),
        "psf_px": (0.4, 1.2),
        "noise": (0.02, 0.10),
        "shot_noise": (0.00, 0.10),
        "pore_stretch_z": (0.7, 2.0),
        "curtaining": (0.00, 0.15),
        "curtain_change": (0.0, 0.5),
        "curtain_onset": (0.0, 0.6),
        "charging": (0.00, 0.25),
        "charging_change": (0.0, 0.4),
        "gradient": (0.0, 0.3),
        "gain_jitter": (0.0, 0.04),
        "drift_px": (0.0, 0.8),
    },
}
FAMILY_FIXED = {  # what every draw of a family has besides its drawn fields
    "calibration": {"drift": "walk"},
    "held_out": {"drift": "trend", "shine_layers": 12},
    "prior": {"drift": "walk", "drift_deg": 0.0, "shine_layers": 10},
}


# Fields a family draws from a list, each equally likely, after its ranges (FAMILIES)
FAMILY_CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "prior": {"geometry": GEOMETRIES},
}


def random_film_spec(
    rng: np.random.Generator, family: str = "calibration", **overrides
) -> SynthSpec:
    """A hard film drawn from a family of FAMILIES: each field uniform in its range (in the
    table's order, then FAMILY_CHOICES, then the seed of the synthesis), the rest the hard
    preset's."""
    if family not in FAMILIES:
        raise ValueError(f"family {family!r}: use one of {', '.join(FAMILIES)}")
    drawn = {key: float(rng.uniform(low, high)) for key, (low, high) in FAMILIES[family].items()}
    for key, options in FAMILY_CHOICES.get(family, {}).items():
        drawn[key] = options[int(rng.integers(0, len(options)))]
    seed = int(rng.integers(0, 2**31 - 1))
    fields = {**HARD_FILM, **FAMILY_FIXED[family]}
    fields["pore_size_xy"] = drawn.pop("pore_size_xy")
    fields["pore_sizes_xy"] = (drawn.pop("large_pore_xy"),)
    fields["pore_shares"] = (drawn.pop("large_share"),)
    contrast = drawn.pop("contrast")
    fields["solid_level"] = SynthSpec.pore_level + contrast
    stretch = drawn.pop("pore_stretch_z", None)
    if stretch is not None:  # pores longer in z than the voxels' nm make them
        voxel_nm = SynthSpec.voxel_nm
        fields["pore_size_z"] = stretch * fields["pore_size_xy"] * voxel_nm[1] / voxel_nm[0]
    fields.update(drawn)
    return SynthSpec(**{**fields, "seed": seed, **overrides})
