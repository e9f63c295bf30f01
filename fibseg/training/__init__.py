"""Training of the grid: one run (train) from patches (patches, augment) or densely
(dense, tiles), learning from unlabelled voxels (unlabelled), successive halving (halving)
and the choice of the best runs (selection)."""
