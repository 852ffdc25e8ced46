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
