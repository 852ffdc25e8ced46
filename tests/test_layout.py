"""The house's rules that the code's layout must keep."""

import ast
from pathlib import Path

from zoo.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]


def test_no_model_module_imports_another():
    """Model modules share code through zoo/models/text.py and images.py, never through each other."""
    models = set(MODELS.values())
    found = []
    for path in sorted((ROOT / "zoo" / "models").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [f"{path.name} imports {n}" for n in names if n in models and not n.endswith(f".{path.stem}")]
    assert not found, found


def test_the_model_contract_is_checked_on_first_use():
    import types

    import pytest

    from zoo import registry
    from zoo.config import ZooError

    for name in MODELS:  # every module keeps it
        registry.check_contract(registry.get(name))
    module = types.ModuleType("zoo.models.fake")
    for hook, (required, _) in registry.HOOKS.items():
        if required:
            setattr(module, hook, None)
    registry.check_contract(module)
    module.variant_metric = None  # misspelt: export would never call it
    with pytest.raises(ZooError, match=r"defines 'variant_metric', which no code reads: did you mean the hook "
                                       r"'variant_metrics'\?"):
        registry.check_contract(module)
    del module.variant_metric, module.runtime_info
    with pytest.raises(ZooError, match=r"^model module zoo.models.fake lacks runtime_info"):
        registry.check_contract(module)
    with pytest.raises(KeyError, match="is no model hook"):
        registry.hook(module, "EVAL_NOTES")


def test_optional_hooks_are_read_through_the_contract():
    """No code reads a model module's optional hook by a name of its own (getattr/hasattr), so a hook
    is either in zoo.registry.HOOKS or read nowhere."""
    import re

    found = [f"{path.relative_to(ROOT)}: {m.group(0)}" for path in sorted((ROOT / "zoo").rglob("*.py"))
             if path.name != "registry.py"
             for m in re.finditer(r"(getattr|hasattr)\((module|presets_module\([^)]*\)), \"\w+\"", path.read_text())]
    assert not found, found


def test_presets_load_without_tensorflow():
    """Each model's Config and PRESETS live in zoo/models/<model>_presets.py, which imports no
    TensorFlow: the command line checks a preset and its --set values before TensorFlow starts."""
    from tests.conftest import run_python

    result = run_python(
        "import sys; sys.modules['tensorflow'] = sys.modules['keras'] = None\n"
        "from zoo import registry\n"
        "for name in registry.MODELS:\n"
        "    registry.preset(name, 'tiny', light=True)\n"
        "    assert registry.presets_module(name).__name__ == registry.MODELS[name] + '_presets'\n"
        "print('ok')")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
