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
check_config(cfg): model-specific checks of a config, raising a one-line UsageError, and
export_files(model, folder, runtime_info): extra files an export holds for other programs.
Modules are imported lazily, so listing models or rejecting a bad name never starts TensorFlow, and
`preset(..., light=True)` reads a model's presets from its source without importing TensorFlow.
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


def presets_module(name: str):
    """The part of a model's module that defines its presets, without TensorFlow: the module's
    `Config` class, `PRESETS`, `EVAL_KEYS` and `check_config`, run from its source with the imports
    they may use (the standard library's dataclasses, math and typing; zoo.config; zoo.runtime, which
    never imports TensorFlow). A statement that needs anything else is left out; if that leaves no
    `Config` or `PRESETS`, this is the real module (imported, TensorFlow and all)."""
    import ast
    import importlib.util
    import types

    if name in _light:
        return _light[name]
    module_name = MODELS[choose("model", name, list(MODELS))]
    source = importlib.util.find_spec(module_name).origin
    with open(source, encoding="utf-8") as f:
        tree = ast.parse(f.read(), source)
    light = types.ModuleType(module_name + ":presets")
    light.__file__ = source
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            keep = all(n in ("dataclasses", "math", "typing") or n == "zoo.config" or n.startswith("zoo.runtime")
                       for n in names)
        elif isinstance(node, ast.ClassDef):
            keep = node.name == "Config"
        elif isinstance(node, ast.FunctionDef):
            keep = node.name == "check_config"
        else:
            keep = isinstance(node, (ast.Assign, ast.AnnAssign))
        if not keep:
            continue
        try:
            exec(compile(ast.Module([node], []), source, "exec"), light.__dict__)
        except (NameError, AttributeError, ImportError):
            continue  # it needs what is left out (e.g. `SAMPLE_DEFAULTS = text.SAMPLE_DEFAULTS`)
    if not (hasattr(light, "Config") and hasattr(light, "PRESETS")):
        light = get(name)
    _light[name] = light
    return light


_light = {}


def preset(name: str, preset_name: str, assignments=(), light: bool = False):
    """The preset's config with `--set` overrides, range-checked. `light=True` checks it without
    importing the model's module (no TensorFlow): the CLI does that before anything else."""
    from zoo.config import apply_overrides, check_values

    module = presets_module(name) if light else get(name)
    cfg = apply_overrides(module.PRESETS[choose("preset", preset_name, list(module.PRESETS))], assignments)
    check_values(cfg)
    if hasattr(module, "check_config"):  # what only the model knows, e.g. evaluation options
        module.check_config(cfg)
    return cfg


def training_overrides(name: str, assignments) -> dict:
    """The `--set` overrides that change what is trained (not those only evaluation reads)."""
    from zoo.config import split_assignments

    eval_keys = getattr(presets_module(name), "EVAL_KEYS", ())
    return {k: v for k, v in split_assignments(assignments).items() if k not in eval_keys}
