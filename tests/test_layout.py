"""The house's rules that the code's layout must keep."""

import ast
from pathlib import Path

from zoo.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]


def test_no_model_module_imports_another():
    """Model modules (and a model package's modules, zoo/models/wavenet/) share code through
    zoo/models/text.py, images.py and steps.py, never through each other."""
    models = set(MODELS.values())
    found = []
    for path in sorted((ROOT / "zoo" / "models").rglob("*.py")):
        parts = path.relative_to(ROOT / "zoo" / "models").with_suffix("").parts
        own = f"zoo.models.{parts[0]}"  # the model a file belongs to (its package, for a package's files)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for n in names:
                other = next((m for m in models if n == m or n.startswith(m + ".")), None)
                if other and other != own:
                    found.append(f"{path.relative_to(ROOT)} imports {n}")
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


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, top_level_only: bool) -> set:
    """The modules `path` imports (`from a import b` counts as a.b too: b may be a module); with
    `top_level_only`, only the imports run when the module is loaded, not those inside functions."""
    tree = ast.parse(path.read_text())
    nodes = []
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and top_level_only:
            continue
        nodes.append(node)
        todo += list(ast.iter_child_nodes(node))
    names = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


ZOO_MODULES = {module_name(p): p for p in (ROOT / "zoo").rglob("*.py")}
HEAVY = ("tensorflow", "keras", "tf2onnx", "tensorflow_datasets", "onnx")


def test_the_runtime_and_the_server_import_no_tensorflow_and_nothing_above_them():
    """zoo.runtime imports only itself (numpy, onnxruntime); zoo.serve only the runtime, zoo.triton and itself.
    (tests/test_runtime.py imports them with TensorFlow blocked; this names the line that breaks the rule.)"""
    allowed = {"zoo.runtime": ("zoo.runtime",), "zoo.serve": ("zoo.runtime", "zoo.serve", "zoo.triton", "zoo.registry",
                                                                "zoo.config")}
    found = []
    for name, path in ZOO_MODULES.items():
        package = next((p for p in allowed if name == p or name.startswith(p + ".")), None)
        if package is None:
            continue
        for target in imported(path, top_level_only=False):
            if target.split(".")[0] in HEAVY:
                found.append(f"{name} imports {target}")
            elif target.startswith("zoo") and target != "zoo" and not target.startswith(allowed[package]):
                found.append(f"{name} imports {target}")
    assert not found, found


def test_no_import_cycles():
    """The zoo's modules, by the imports that run when each is loaded, form no cycle."""
    graph = {}
    for name, path in ZOO_MODULES.items():
        targets = set()
        for target in imported(path, top_level_only=True):
            while target and target not in ZOO_MODULES:  # `from zoo.a import f` -> zoo.a
                target = target.rpartition(".")[0]
            if target and target != name and target != "zoo":
                targets.add(target)
        graph[name] = targets
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_shipped_keras_models_still_load():
    """Registered Keras names ("zoo>WaveNet", ...) do not change when code moves between modules: every
    shipped exports/<model>/model.keras loads, as its model module's class."""
    import warnings

    import keras

    from zoo import registry

    for name in MODELS:
        path = ROOT / "exports" / name / "model.keras"
        if not path.exists():
            continue
        module = registry.get(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the optimizer's variables are not restored for inference
            model = keras.saving.load_model(path, compile=False)
        assert type(model).__module__.startswith(module.__name__), (name, type(model).__module__)
