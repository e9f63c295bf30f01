"""Typed settings, built once from the validated config: the library takes these, so the
config's key names are not its API."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class SearchRanges:
    """Ranges of the random search of §3.7; each seed draws one value of each."""

    a: tuple[float, float] = (0.025, 0.10)
    b: tuple[float, float] = (0.025, 0.10)
    log10_lr0: tuple[float, ...] = (-2.5, -2.25, -2.0)
    lr_step: float = 0.25
    k: tuple[int, ...] = (4, 6, 8, 10, 12, 14, 16, 18, 20)
    log10_c: tuple[float, float] = (-7.0, -5.0)
    p_d: tuple[float, float] = (0.0, 0.6)
    p_sd: tuple[float, float] = (0.0, 0.6)
    augment_probability: float = 0.5


@dataclass(frozen=True)
class UnlabelledSettings:
    """Learning from unlabelled voxels (dense training only; fibseg.training.unlabelled).

    method none: today's training. pseudo: each step adds `tiles_per_batch` tiles of the
    preprocessed volumes, labelled by the random forest's score volumes where its votes reach
    `confidence`, weighing `weight` x the labelled voxels, from `start_epoch` on; the network
    sees them under intensity perturbation and Gaussian noise (`noise`)."""

    method: str = "none"
    weight: float = 1.0
    confidence: float = 0.6
    tiles_per_batch: int = 4
    start_epoch: int = 0
    noise: float = 0.03


@dataclass(frozen=True)
class TrainingSettings:
    """SGD training of one grid run (§3.5, §3.7)."""

    epochs: int = 40
    batch_size: int = 128
    momentum: float = 0.99
    optimizer: str = "sgd"
    steps_per_epoch: int | None = None
    mode: str = "patches"
    tiles_per_batch: int = 4
    tile: int = 128
    init: str = "scratch"  # or a bundle folder or .keras file (fibseg.training.initial)
    patience: int | None = None  # epochs without a lower val_loss before a run stops
    search: SearchRanges = field(default_factory=SearchRanges)
    unlabelled: UnlabelledSettings = field(default_factory=UnlabelledSettings)

    @classmethod
    def from_config(cls, training: dict) -> TrainingSettings:
        """From the config's `training` section (missing keys take the defaults)."""
        known = {f.name for f in fields(cls)} - {"search", "unlabelled"}
        search = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in training.get("search", {}).items()
        }
        return cls(
            **{k: v for k, v in training.items() if k in known},
            search=SearchRanges(**search),
            unlabelled=UnlabelledSettings(**training.get("unlabelled", {})),
        )


@dataclass(frozen=True)
class InferenceSettings:
    """How scores are computed (§3.8): the engine and its batch and tile sizes."""

    engine: str = "sliding"
    slices_per_job: int = 1
    extract_batch: int = 65536
    predict_batch: int = 2048
    tile: int = 1024
    allow_approximate_dense: bool = False
    score_dtype: str = "float32"

    @classmethod
    def from_config(cls, inference: dict) -> InferenceSettings:
        """From the config's `inference` section (missing keys take the defaults)."""
        return cls(**inference)


@dataclass(frozen=True)
class AlignSettings:
    """Rule align's registration (config key `align`; fibseg.preprocess.registration): `method`
    joint (robust joint solve of pairwise phase correlations) or previous (the paper's chain),
    `model` translation or rigid, pairs up to `lags` slices apart, steps over `max_step_px`
    per slice dropped, the band
    (`band_px`, Gaussian sigmas) registered on, an optional region `roi` (y, x, height,
    width) on a mark that does not change, and `still`: keep a stack as acquired when its
    drift test (fibseg.preprocess.registration.drift_test) stays within `still_sigmas`."""

    method: str = "joint"
    model: str = "translation"
    lags: int = 2
    max_step_px: float = 5.0
    band_px: tuple[float, float] = (1.0, 8.0)
    roi: tuple[int, int, int, int] | None = None  # y, x, height, width
    still: bool = True
    still_sigmas: float = 4.0
    upsample: int = 20

    @classmethod
    def from_config(cls, section: dict | None) -> AlignSettings:
        """From the config's `align` section, or `asdict` of one (missing keys: defaults)."""
        section = dict(section or {})
        if section.get("band_px") is not None:
            section["band_px"] = tuple(section["band_px"])
        if section.get("roi") is not None:
            section["roi"] = tuple(int(v) for v in section["roi"])
        return cls(**section)


@dataclass(frozen=True)
class StructureSettings:
    """The config section `structure` (fibseg.structure) (workflow/schemas/config.schema.yaml)."""

    voxel_nm: float | None = None  # side of the analysis grid's voxels; None: from max_voxels
    max_voxels: int = 2_000_000  # the analysis grid's size bound when voxel_nm is None
    max_radii: int = 40  # at most this many ball radii in the local thickness
    tolerance: float = 1e-6  # relative residual of the diffusion solve

    @classmethod
    def from_config(cls, section: dict) -> StructureSettings:
        keys = ("voxel_nm", "max_voxels", "max_radii", "tolerance")
        return cls(**{key: section[key] for key in keys if key in section})


@dataclass(frozen=True)
class PriorRecipe:
    """The FIB-SEM prior's recipe (fibseg.pipeline.prior): what it is trained on and how;
    `seed` draws the films, the split and the run."""

    seed: int = 0
    films: int = 60
    slices: int = 12
    side: int = 160
    regions_per_film: int = 8
    region_size: int = 64
    val_every: int = 5
    n_xy: int = 96
    n_z: int = 3
    epochs: int = 40
    steps_per_epoch: int = 50
    tiles_per_batch: int = 16
    log10_lr: float = -3.0
    sigmas: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    thresholds: tuple[float, ...] = (0.4, 0.45, 0.5, 0.55, 0.6)
    min_object_voxels: int = 100
