"""Training of the grid: one run (train: `train_run` of a `TrainingRun`) with the loop its
architecture picks (loops; fibseg.networks.registry): for the U-Net, today's default path, tiles
around the labels (unet_tiles); for the patch CNN sampled patches (patches, augment) or dense
tiles through its twin (dense, tiles), learning from unlabelled voxels (unlabelled).
Successive halving (halving) and the choice of the best runs (selection)."""
