"""Inference: scores of slices and regions (infer) by the engine the model's architecture
picks (fibseg.networks.registry): for the U-Net, today's default path, its exact tiles
(unet_engine); for the patch CNN the sliding window (sliding) or its fully convolutional twin
(dense_engine). The ensemble of the best runs (ensemble; each member carries its geometry and
architecture, found once when it is loaded), pretrained models (pretrained) and model bundles
(bundle)."""
