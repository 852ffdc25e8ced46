"""One dict from model name to the module that defines it.

A model module provides:
  Config, PRESETS          a dataclass of hyper-parameters and its named presets ("tiny", "default")
  DATASET                  the TFDS dataset it trains on by default
  SAMPLE_DEFAULTS          sampling options for `zoo sample` (validated like --set keys)
  load_data(cfg, data_dir) tf.data pipelines and what the model needs from the data (e.g. vocabulary)
  build_model(cfg, data)   a compiled Keras model
  evaluate(model, cfg, data_dir) -> dict of measured metrics
  export_graphs(model)     the single-step graphs to publish (see zoo/export.py)
  card(...)                the model-card sections specific to the model
and may provide EVAL_KEYS: config keys only evaluation reads (overriding them keeps the run folder),
and check_config(cfg): model-specific checks of a config, raising a one-line UsageError.
Modules are imported lazily, so listing models or rejecting a bad name never starts TensorFlow.
"""

import importlib

from zoo.config import choose

MODELS = {
    "rnn": "zoo.models.rnn",
    "lstm": "zoo.models.lstm",
    "transformer": "zoo.models.transformer",
    "gan": "zoo.models.gan",
    "vae": "zoo.models.vae",
    "pixelcnn": "zoo.models.pixelcnn",
    "wavenet": "zoo.models.wavenet",
    "diffusion": "zoo.models.diffusion",
}


REQUIRED = ("Config", "PRESETS", "DATASET", "SAMPLE_DEFAULTS", "load_data", "build_model", "evaluate",
            "export_graphs", "runtime_info")
_checked = set()


def get(name: str):
    """The model's module, its contract checked on first use (before any data loads or training)."""
    from zoo.config import ZooError

    module = importlib.import_module(MODELS[choose("model", name, list(MODELS))])
    if name not in _checked:
        missing = [hook for hook in REQUIRED if not hasattr(module, hook)]
        if missing:
            raise ZooError(f"model module {module.__name__} lacks {', '.join(missing)} "
                           "(the hooks zoo/registry.py lists)")
        _checked.add(name)
    return module


def preset(name: str, preset_name: str, assignments=()):
    from zoo.config import apply_overrides

    from zoo.config import check_values

    module = get(name)
    cfg = apply_overrides(module.PRESETS[choose("preset", preset_name, list(module.PRESETS))], assignments)
    check_values(cfg)
    if hasattr(module, "check_config"):  # what only the model knows, e.g. evaluation options
        module.check_config(cfg)
    return cfg


def training_overrides(name: str, assignments) -> dict:
    """The `--set` overrides that change what is trained (not those only evaluation reads)."""
    from zoo.config import split_assignments

    eval_keys = getattr(get(name), "EVAL_KEYS", ())
    return {k: v for k, v in split_assignments(assignments).items() if k not in eval_keys}
