"""One dict from model name to the module that defines it, and the contract such a module keeps.

`HOOKS` below names every hook a model module provides or may provide, who reads it and when.
`get(name)` checks a module against it on first use, before any data loads: a required hook that is
missing, or a name that looks like a misspelt hook (`INT8_GRAPH`, `variant_metric`), is a one-line
error. Code that reads an optional hook does so through `hook(module, name)`, which knows only the
names in `HOOKS`. Modules are imported lazily, so listing models or rejecting a bad name never starts
TensorFlow, and `preset(..., light=True)` reads a model's presets from its presets module, which imports
no TensorFlow.
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


# The model-module contract: hook -> (required, who reads it and when).
HOOKS = {
    "Config": (True, "registry.preset: the dataclass of hyper-parameters"),
    "PRESETS": (True, "registry.preset: named configs ('tiny', 'default', ...)"),
    "DATASET": (True, "cli: the TFDS dataset it trains on by default"),
    "SAMPLE_DEFAULTS": (True, "cli sample: sampling options, validated like --set keys"),
    "load_data": (True, "train: (cfg, data_dir) -> tf.data pipelines and what the model needs of the data"),
    "build_model": (True, "train: (cfg, data) -> a compiled Keras model"),
    "evaluate": (True, "evaluate: (model, cfg, data_dir) -> a dict of measured metrics"),
    "export_graphs": (True, "export: (model) -> the single-step graphs to publish"),
    "runtime_info": (True, "export: (model) -> the manifest's runtime info, what zoo.runtime's sampler reads"),
    "EVAL_KEYS": (False, "registry.preset, train: config keys only evaluation reads (overriding them keeps "
                         "the run folder)"),
    "check_config": (False, "registry.preset: (cfg) -> model-specific checks, a one-line UsageError"),
    "MONITOR": (False, "train: the logged value that ranks epochs (default val_loss; None keeps the last)"),
    "INT8_GRAPHS": (False, "export: {graph: quantize_dynamic settings} of the int8 variants to publish"),
    "variant_metrics": (False, "export: (folder, graph, files, info, config) -> each variant's test metric"),
    "export_files": (False, "export: (model, folder, runtime_info) -> extra files for other programs"),
    "card_sample": (False, "export: (folder, manifest) -> the model card's samples section"),
    "EVAL_NOTE": (False, "export: the model card's note on how the test metrics were measured"),
    "STANDARD_NOTE": (False, "export: the model card's note on a graph's standard-ops variant"),
}
_checked = set()


def get(name: str):
    """The model's module, its contract (`HOOKS`) checked on first use (before any data loads or training)."""
    module = importlib.import_module(MODELS[choose("model", name, list(MODELS))])
    if name not in _checked:
        check_contract(module)
        _checked.add(name)
    return module


def check_contract(module):
    """A ZooError naming what `module` lacks of `HOOKS`, or a name of its own that is one letter or
    two from a hook's (a misspelt optional hook is otherwise silently never called)."""
    import difflib

    from zoo.config import ZooError

    missing = [name for name, (required, _) in HOOKS.items() if required and not hasattr(module, name)]
    if missing:
        raise ZooError(f"model module {module.__name__} lacks {', '.join(missing)} (zoo.registry.HOOKS)")
    for attr in vars(module):
        if attr in HOOKS or attr.startswith("_"):
            continue
        close = difflib.get_close_matches(attr, HOOKS, n=1, cutoff=0.9)
        if close:
            raise ZooError(f"model module {module.__name__} defines {attr!r}, which no code reads: did you "
                           f"mean the hook {close[0]!r}? (zoo.registry.HOOKS)")


def hook(module, name: str, default=None):
    """The module's optional hook `name` (one of HOOKS), or `default` where it has none."""
    if name not in HOOKS:
        raise KeyError(f"{name!r} is no model hook (zoo.registry.HOOKS)")
    return getattr(module, name, default)


def presets_module(name: str):
    """The model's presets module, `zoo/models/<model>_presets.py`: its `Config`, `PRESETS` and, where
    it has them, `EVAL_KEYS` and `check_config`, which import no TensorFlow (the model's module imports
    them from it)."""
    return importlib.import_module(MODELS[choose("model", name, list(MODELS))] + "_presets")


def preset(name: str, preset_name: str, assignments=(), light: bool = False):
    """The preset's config with `--set` overrides, range-checked. `light=True` checks it without
    importing the model's module (no TensorFlow): the CLI does that before anything else."""
    from zoo.config import apply_overrides, check_values

    module = presets_module(name) if light else get(name)
    cfg = apply_overrides(module.PRESETS[choose("preset", preset_name, list(module.PRESETS))], assignments)
    check_values(cfg)
    if hook(module, "check_config"):  # what only the model knows, e.g. evaluation options
        module.check_config(cfg)
    return cfg


def training_overrides(name: str, assignments) -> dict:
    """The `--set` overrides that change what is trained (not those only evaluation reads)."""
    from zoo.config import split_assignments

    eval_keys = hook(presets_module(name), "EVAL_KEYS", ())
    return {k: v for k, v in split_assignments(assignments).items() if k not in eval_keys}
