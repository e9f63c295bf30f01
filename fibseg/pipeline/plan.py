"""The plan of a run: the merged, validated config as one typed object, built once by
`RunPlan.from_config` and used alike by the Snakefile (workflow/rules/common.smk: `PLAN`), the
rules' input functions and the `fibseg` command (fibseg.pipeline.project).

It holds the data sets of the sheet, the grid, what is trained and what is predicted, the
settings the rules hand to their scripts, the context margins and the resources; its methods
give the target lists, the prediction chunks and the memory of the jobs (the estimates of
fibseg.pipeline.dag). Light like dag.py: planning a run imports no TensorFlow. A file is read
only when asked for (a volume's shape or voxel size, a pretrained model's geometry) and then
remembered. Lists stay lists: the rules record them as params, and a params value that
changes its type reruns the jobs."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..inference.pretrained import (
    Pretrained,
    check_annotations_needed,
    check_pretrained,
    init_model_file,
)
from ..io.errors import Faults, collect
from ..io.volume import Volume, VoxelSources, voxel_size_with_source
from ..networks.registry import Architecture, Geometry, architecture
from ..runtime.settings import AlignSettings, InferenceSettings, TrainingSettings
from ..training import halving
from .checks import check_config
from .dag import (
    centre_chunks,
    chunk_names,
    chunk_slices,
    context_margins,
    keras_input_geometry,
)
from .grid import Grid
from .memory import JobMemory
from .sheet import GENERATED, Dataset, load_sheet

EXPORT_THREADS = 2  # slabs that export_ome_zarr reads and writes at a time
RUN_FILES = {"model": "keras", "history": "csv", "params": "json"}  # of one training run
BEST_MODEL = "results/model/best.keras"
MODEL_CHECKED = "results/pretrained/checked.json"  # rule check_model, before any prediction
STRUCTURE_TARGETS = ["results/tables/structure.csv", "results/figures/structure.png"]
TRAINED_TARGETS = [  # a run that trains: the selection, the bundle's description, Tables 2-3
    "results/selection/cells.csv",
    "results/model/fibseg-model.json",
    "results/tables/table2.csv",
    "results/tables/table3.csv",
    "results/tables/porosity_ttest.csv",
    "results/figures/fig8_regions.png",
]


def constraint(names: list[str]) -> str:
    """A wildcard pattern that matches exactly these names."""
    return "|".join(map(re.escape, names)) or "NO_DATASET"


@dataclass(frozen=True)
class Forest:
    """The random-forest baseline: trained when `enabled` (and nothing is pretrained), on n_z
    slices with features up to sigma_max; its full-volume row scores `volume_slices` slices
    around each volume's centre (0: every slice)."""

    enabled: bool
    n_z: int
    sigma_max: float
    volume_slices: int = 0


@dataclass(frozen=True)
class Resources:
    threads: int  # of the train and predict jobs (config key resources.threads)
    export_threads: int = EXPORT_THREADS


@dataclass(frozen=True)
class RunPlan(JobMemory):
    """What a run does: its data sets, grid, training and prediction, outputs and resources."""

    sheet: str  # the sheet's path (config key datasets)
    table: tuple[Dataset, ...]  # the sheet's rows, in order: full volumes
    published: dict[str, dict]  # the paper's released crops: name -> regions, masks
    demo: dict[str, dict]  # synthetic data sets: name -> spec (rule synthesize_demo)
    default_voxel_size: tuple[float, ...]  # (z, y, x) nm where neither sheet nor file says
    architecture: Architecture  # fibseg.networks.registry
    padding: str
    grid: Grid
    pretrained: Pretrained | None  # a model of an earlier run: nothing is trained
    top_k: int  # ensemble members: the best runs
    forest: Forest
    training: TrainingSettings
    inference: InferenceSettings
    align: AlignSettings
    margins: dict[str, int]  # context around every region (fibseg.pipeline.dag)
    slab_depth: int  # slices per slab of rule postprocess
    structure: dict  # the config section (rule analyze_structure)
    ome_zarr: bool
    keep_score_chunks: bool
    resources: Resources
    memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_config(cls, config: dict, sheet_schema: str, faults: Faults | None = None) -> RunPlan:
        """The plan of a merged config that the config schema validated (filling its
        defaults): checked across keys (`check_config`, raised at once), then the pretrained
        model's files, the sheet (validated against `sheet_schema`, its external files
        present), that something can be trained, and every data set's voxel size against a
        bundle's. Those faults are raised together (an InputErrors) or, given `faults`, added
        to it and the plan is returned (`fibseg check` goes on to read the volumes)."""
        check_config(config)
        pretrained = Pretrained.from_config(config)
        with nullcontext(faults) if faults is not None else collect() as found:
            if pretrained:
                with found.check():
                    check_pretrained(pretrained)
            if not pretrained:
                with found.check():
                    init_model_file(config["training"]["init"])
            sheet = load_sheet(config["datasets"], sheet_schema, GENERATED, found)
            plan = cls.of(config, map(Dataset.from_row, sheet.to_dict("records")), pretrained)
            with found.check():
                check_annotations_needed(plan.region_datasets, pretrained, plan.sheet)
            if pretrained:  # a bundle's model segments volumes of about its data's voxel size
                faulty = found.datasets()
                for name in (name for name in plan.datasets if name not in faulty):
                    with found.check():
                        pretrained.check_voxel_size(plan.voxel_size(name), name)
        return plan

    @classmethod
    def of(
        cls, config: dict, table: Iterable[Dataset], pretrained: Pretrained | None = None
    ) -> RunPlan:
        """The plan of a checked config and the sheet's rows: no check, no file read."""
        grid, forest = config["grid"], config["forest"]
        training = TrainingSettings.from_config(config["training"])
        inference = InferenceSettings.from_config(config["inference"])
        if pretrained and pretrained.bundle:  # the engine and dtype its sigma and T fit
            inference = pretrained.bundle.inference(inference)
        network = architecture(config["model"]["architecture"])
        # the CNN's pseudo-labels need the forest's scores of every slice
        pseudo = training.unlabelled.method == "pseudo"
        trained_forest = Forest(
            bool(forest["enabled"] and pretrained is None),
            forest["n_z"],
            forest["sigma_max"],
            0 if pseudo else forest["volume_slices"],
        )
        margins = context_margins(
            grid["n_xy"],
            [*grid["n_z"], trained_forest.n_z if trained_forest.enabled else 1],
            config["postprocess"]["sigma_grid"],
            network,
        )
        return cls(
            sheet=config["datasets"],
            table=tuple(table),
            published=config["published"]["datasets"],
            demo=config["demo"],
            default_voxel_size=tuple(config["voxel_size_nm"]),
            architecture=network,
            padding=config["model"]["padding"],
            grid=Grid(
                list(grid["n_xy"]),
                list(grid["n_z"]),
                grid["seeds"],
                halving.GridPlan.from_config(grid, training.epochs),
            ),
            pretrained=pretrained,
            top_k=config["ensemble"]["top_k"],
            forest=trained_forest,
            training=training,
            inference=inference,
            align=AlignSettings.from_config(config["align"]),
            margins=margins,
            slab_depth=config["postprocess"]["slab_depth"],
            structure=config["structure"],
            ome_zarr=config["outputs"]["ome_zarr"],
            keep_score_chunks=config["outputs"]["keep_score_chunks"],
            resources=Resources(config["resources"]["threads"]),
        )

    # --- the data sets ---------------------------------------------------------------------

    @property
    def datasets(self) -> list[str]:
        """The sheet's data sets, full volumes: preprocessed, predicted, segmented."""
        return [row.name for row in self.table]

    @property
    def rows(self) -> dict[str, dict]:
        """Name -> the sheet's row as a mapping (for the rules' `lookup(dpath=...)`)."""
        return {row.name: asdict(row) for row in self.table}

    def dataset(self, name: str) -> Dataset:
        return self.remember(("rows",), lambda: {row.name: row for row in self.table})[name]

    @property
    def annotated(self) -> list[str]:
        """Data sets with regions and labels or a painted annotation (the rest: predict-only)."""
        return [row.name for row in self.table if row.annotated]

    @property
    def region_datasets(self) -> list[str]:
        """What is trained and scored on: annotated data sets and the published crops."""
        return self.annotated + [name for name in self.published if name not in self.datasets]

    @property
    def truth_datasets(self) -> list[str]:
        return [row.name for row in self.table if row.truth]

    @property
    def aligned_here(self) -> list[str]:
        """The data sets rule align registers (the rest are flagged `aligned`)."""
        return [row.name for row in self.table if not row.aligned]

    def remember(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def volume_shape(self, name: str) -> tuple[int, int, int]:
        """(z, y, x) of a data set's volume: a demo's from its spec, else the file's header."""
        row = self.dataset(name)
        if name in self.demo and row.volume == f"results/demo/{name}/volume.tif":
            spec = self.demo[name]
            return spec["slices"], spec["height"], spec["width"]

        def read() -> tuple[int, int, int]:
            with Volume(row.volume, name) as volume:
                return volume.shape

        return self.remember(("shape", name), read)

    def voxel_size_with_source(self, name: str) -> tuple[tuple[float, ...], VoxelSources]:
        """(z, y, x) nm of a data set and where each axis came from: the sheet's
        voxel_size_nm, else the volume's own metadata (not read for volumes the workflow
        makes), else the config's voxel_size_nm."""
        row = self.dataset(name)
        return self.remember(
            ("voxel", name),
            lambda: voxel_size_with_source(
                row.volume if row.external else None,
                self.default_voxel_size,
                row.voxel_size_nm,
                name,
                self.sheet,
            ),
        )

    def voxel_size(self, name: str) -> tuple[float, ...]:
        return self.voxel_size_with_source(name)[0]

    def training_voxel_sizes(self) -> dict[str, list[float]]:
        """(z, y, x) nm of every data set the CNN trains on (published crops: the config's)."""
        return {
            name: list(self.voxel_size(name) if name in self.datasets else self.default_voxel_size)
            for name in self.region_datasets
        }

    @property
    def training_volumes(self) -> dict[str, list[str]]:
        """Annotated data set -> its checked.json and preprocessed.h5 (rule describe_model
        records their dtype and gradient)."""
        return {
            name: [f"results/{name}/checked.json", f"results/{name}/preprocessed.h5"]
            for name in self.annotated
        }

    # --- what is trained -------------------------------------------------------------------

    @property
    def trains(self) -> bool:
        """Train and select (and the forest, Tables 2-3, Figure 8): nothing is pretrained."""
        return self.pretrained is None

    @property
    def rung_training(self) -> list[TrainingSettings]:
        """The training settings of each rung: its runs train up to the rung's epoch."""
        return [replace(self.training, epochs=end) for end in self.grid.rungs.rung_epochs]

    @property
    def ensemble_members(self) -> list[str]:
        return [f"results/model/member{rank}.keras" for rank in range(1, self.top_k)]

    @property
    def init_models(self) -> list[str]:
        """The model file the grid's runs start from (training.init); none from scratch."""
        found = self.remember(("init",), lambda: init_model_file(self.training.init))
        return [found] if found else []

    @property
    def unlabelled_volumes(self) -> list[str]:
        """The preprocessed volumes that training.unlabelled draws tiles from (none when off)."""
        if self.training.unlabelled.method == "none":
            return []
        return [f"results/{name}/preprocessed.h5" for name in self.datasets]

    @property
    def unlabelled_teachers(self) -> list[str]:
        """The forest's score volumes that label those tiles (training.unlabelled: pseudo)."""
        if self.training.unlabelled.method != "pseudo":
            return []
        return [f"results/forest/{name}/scores.h5" for name in self.datasets]

    @staticmethod
    def run_outputs(run: str, keep_last_state: bool) -> dict[str, str]:
        """The files of one training run; `last` (its last state) when a later rung of
        successive halving resumes from it."""
        files = {name: f"{run}/{name}.{ext}" for name, ext in RUN_FILES.items()}
        return files | ({"last": f"{run}/last.keras"} if keep_last_state else {})

    # --- what is predicted -----------------------------------------------------------------

    @property
    def cnn_models(self) -> list[str]:
        """The model files, best first: the selected runs, or the pretrained file(s)."""
        if self.pretrained:
            return [*self.pretrained.models]
        return [BEST_MODEL, *self.ensemble_members]

    @property
    def model_checked(self) -> list[str]:
        """Rule check_model's record: a pretrained model is loaded and checked first."""
        return [] if self.trains else [MODEL_CHECKED]

    @property
    def optimizes_postprocess(self) -> bool:
        """Sigma and T are chosen here (else a pretrained run's postprocess.json is used)."""
        return self.trains or self.pretrained.postprocess is None

    @property
    def postprocess_json(self) -> str:
        """Sigma and T: chosen here, or the pretrained run's."""
        if self.optimizes_postprocess:
            return "results/postprocess.json"
        return self.pretrained.postprocess

    def chunks(self, name: str) -> list[str]:
        """One chunk name per predict_slices job of the data set."""
        return chunk_names(self.volume_shape(name)[0], self.inference.slices_per_job)

    def forest_chunks(self, name: str) -> list[str]:
        """The chunks the forest scores (forest.volume_slices around the centre)."""
        depth = self.volume_shape(name)[0]
        return centre_chunks(depth, self.inference.slices_per_job, self.forest.volume_slices)

    def stitched_slices(self, name: str, forest: bool = False) -> list[int]:
        """[first, stop) of the slices that rule stitch (or stitch_forest) writes."""
        chunks = self.forest_chunks(name) if forest else self.chunks(name)
        return [self.chunk_slices(name, chunks[0])[0], self.chunk_slices(name, chunks[-1])[1]]

    def chunk_slices(self, name: str, chunk: str) -> list[int]:
        """[first, stop) slice of one predict_slices job."""
        return chunk_slices(chunk, self.volume_shape(name)[0], self.inference.slices_per_job)

    def model_geometry(self) -> Geometry:
        """The geometry of the largest model: of the pretrained files where they can all be
        read, else of the grid."""

        def largest() -> Geometry:
            grid = self.architecture.grid_geometry(
                max(self.grid.n_xy), max(self.grid.n_z), self.padding
            )
            models = self.pretrained.models if self.pretrained else ()
            found = [keras_input_geometry(path) for path in models]
            if found and all(found):
                return max(found, key=lambda g: g.n_xy**2 * g.n_z)
            return grid

        return self.remember(("geometry",), largest)

    # --- targets ---------------------------------------------------------------------------

    def all_targets(self) -> list[str]:
        """Every segmentation; with training also the selection, Tables 2-3 and Figure 8
        (with `pretrained` the split of the regions is unknown, so no region tables)."""
        names = self.datasets
        return [
            *(TRAINED_TARGETS if self.trains else []),
            *(["results/tables/full_volume.csv"] if self.truth_datasets else []),
            *(f"results/{name}/segmentation.tif" for name in names),
            *(f"results/{name}/{name}.ome.zarr" for name in names if self.ome_zarr),
            *(f"results/forest/{name}/segmentation.tif" for name in names if self.forest.enabled),
            *(["results/figures/fig9_slices.png"] if names else []),
            *(f"results/figures/alignment_{name}.png" for name in self.aligned_here),
            *(STRUCTURE_TARGETS if self.structure["enabled"] and names else []),
        ]
