"""Every notebook runs top to bottom with tiny settings and writes its export.

The notebooks fine-tune the shipped `exports/<model>/model.keras` on real TFDS data, so these tests
need the prepared data beside the checkout (`../shared/tfds`) and skip without it. A cell inserted
after each notebook's `parameters` cell sets the tiny values (as papermill would).
"""

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

TINY = {
    "text": dict(MODEL="transformer", EPOCHS=1, STEPS=2),
    "text-lstm": dict(MODEL="lstm", EPOCHS=1, STEPS=2),
    "gan": dict(EPOCHS=1, STEPS=2, EVAL_SAMPLES=200),
    "vae": dict(EPOCHS=1, STEPS=2, IWAE_IMAGES=2),
    "pixelcnn": dict(EPOCHS=1, STEPS=2, EVAL_IMAGES=100, SAMPLES=2),
    "wavenet": dict(EPOCHS=1, STEPS=2, EVAL_CLIPS=4),
    "diffusion": dict(EPOCHS=1, STEPS=2, EVAL_SAMPLES=100, DDIM_STEPS=2),
}
MODEL_OF = {"text": "transformer", "text-lstm": "lstm"}


@pytest.mark.parametrize("case", list(TINY))
def test_notebook_runs_and_exports(case, real_tfds, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    name = case.split("-")[0]
    model = MODEL_OF.get(case, name)
    if not (ROOT / "exports" / model / "model.keras").exists():
        pytest.fail(f"exports/{model} is missing: the notebook has nothing to fine-tune")
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{name}.ipynb is committed with outputs"
    index = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
    params = dict(TINY[case], OUT=str(tmp_path / "export"), DATA_DIR=str(real_tfds))
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(
        "\n".join(f"{k} = {v!r}" for k, v in params.items()), metadata={"tags": ["injected-parameters"]}))
    # The judges shipped in exports/classifiers, not the empty test folder the other tests use.
    monkeypatch.setenv("ZOO_CLASSIFIERS", str(ROOT / "exports" / "classifiers"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["model"] == model and manifest["preset"] == "finetuned"
    assert manifest["training"]["note"].startswith(("fine-tuned", "adapted"))
    assert (tmp_path / "export" / "README.md").exists()
