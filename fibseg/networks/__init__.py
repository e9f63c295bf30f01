"""The networks: the grid's patch CNN (model), its fully convolutional twin (twin), and
the patch and window geometry at the edges (windows)."""
