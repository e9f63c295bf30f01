"""The memory (MB) each heavy rule asks for, from a run's plan: the estimates of
fibseg.pipeline.dag for a data set's shape. The rules multiply it by the attempt."""

from __future__ import annotations

from ..io.omezarr import CHUNKS
from .dag import (
    export_memory_mb,
    forest_memory_mb,
    postprocess_memory_mb,
    predict_memory_mb,
    structure_memory_mb,
)


class JobMemory:
    """The memory of a RunPlan's jobs (mixed into fibseg.pipeline.plan.RunPlan, whose
    volume shapes, voxel sizes, model geometry and settings it reads)."""

    def predict_mem_mb(self, name: str) -> int:
        """One predict_slices job, for the largest model of the grid (or the pretrained one)."""
        _, height, width = self.volume_shape(name)
        return predict_memory_mb(height, width, self.model_geometry(), self.inference)

    def forest_mem_mb(self, name: str) -> int:
        """One predict_forest_slices job: the features of a slice."""
        _, height, width = self.volume_shape(name)
        return forest_memory_mb(height, width, self.forest.n_z, self.forest.sigma_max)

    def postprocess_mem_mb(self, name: str) -> int:
        """One slab's masks and connected-component labels (the volume is streamed)."""
        return postprocess_memory_mb(self.volume_shape(name), self.slab_depth)

    def export_mem_mb(self, name: str) -> int:
        """One export_ome_zarr job: a few slabs of whole slices."""
        return export_memory_mb(self.volume_shape(name), CHUNKS[0], self.resources.export_threads)

    def structure_mem_mb(self, name: str) -> int:
        """One analyze_structure job: the native volume and the analysis grid."""
        return structure_memory_mb(self.volume_shape(name), self.voxel_size(name), self.structure)
