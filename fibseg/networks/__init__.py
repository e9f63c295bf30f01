"""The networks, one object each, found by name in the registry (registry: `architecture(name)`
for model.architecture, `architecture_of(model)` for a loaded model; architecture: the
`Architecture` base class and `register`). Today's default path (config/config.yaml) is the
U-Net (unet: `Unet`, a 2.5-D U-Net scored slice by slice); the paper's patch CNN (patch:
`PatchCNN`; model: its layers and random search; twin: its fully convolutional twin) is the
schema's default and what any other model is scored as. windows: the patch and window
geometry at the edges. A new network is one module that subclasses `Architecture` and calls
`register`, imported by the registry."""
