"""One module per model; `zoo.registry.MODELS` maps names to them."""


def load_model(path, **kwargs):
    """`keras.models.load_model(path, safe_mode=True)` with every zoo model class registered.

    Keras finds custom classes only once their module is imported; this imports them all.
    """
    import importlib
    import warnings

    import keras

    from zoo.registry import MODELS

    for module in MODELS.values():
        importlib.import_module(module)
    kwargs.setdefault("safe_mode", True)
    with warnings.catch_warnings():
        # Training checkpoints hold Adam's slots, which the zoo's models build on their first
        # step instead of at load (see text.CharModel.compile_from_config): nothing is lost.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        return keras.models.load_model(path, **kwargs)
