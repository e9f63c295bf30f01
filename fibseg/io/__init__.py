"""Data I/O: one entry point for volumes (volume: `Volume`, `read_volume`) over one reader
module per format (tiff, slice, hdf5, zarr, mrc), formats and voxel sizes, the input errors,
atomic outputs, writers and the OME-Zarr export."""
