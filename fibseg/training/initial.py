"""Where a training run starts (config key `training.init`): from random weights (`scratch`,
the paper's), or from the weights of a model trained before, which the run then fine-tunes on
this run's labels (`prior`, the FIB-SEM prior that ships with fibseg; a bundle folder that
`fibseg export-model` wrote; or a `.keras` file).

The model is read in Keras's safe mode (it cannot run code) and must be a network of the run's
architecture with the same weights' shapes (for the U-Net: the same slices, `grid.n_z`);
everything else of the run (grid, seeds, hyper-parameters, dropout, optimiser, resume) is as
from scratch. Which file a config names is `fibseg.inference.pretrained.init_model_file`'s
to say."""

from __future__ import annotations

from ..io.errors import InputError

SCRATCH = "scratch"
FIX = (
    "set training.init to scratch, to prior (the FIB-SEM prior that ships with fibseg), to a "
    "bundle folder that `fibseg export-model` wrote, or to "
    "the .keras file of an earlier run of the same architecture and slices (grid.n_z)."
)


def start_from(model, path: str, architecture_name: str) -> None:
    """Set a freshly built `model` to the weights of the model in `path` (safe mode). An
    InputError naming the file where that model is another architecture or its weights have
    other shapes (another number of slices, say)."""
    import keras

    from ..networks.registry import architecture_of

    try:
        source = keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as error:
        raise InputError(
            f"is not a Keras model that safe mode reads ({error}).", file=path, fix=FIX
        ) from None
    source_architecture = architecture_of(source).name
    if source_architecture != architecture_name:
        raise InputError(
            f"training.init is a {source_architecture} model; this run trains "
            f"{architecture_name} (model.architecture).",
            file=path,
            fix=FIX,
        )
    theirs = [w.shape for w in source.get_weights()]
    ours = [w.shape for w in model.get_weights()]
    if theirs != ours:
        raise InputError(
            f"training.init's weights do not fit this run's network: input "
            f"{source.input_shape} against {model.input_shape} ({len(theirs)} against "
            f"{len(ours)} weight arrays).",
            file=path,
            fix=FIX,
        )
    model.set_weights(source.get_weights())
