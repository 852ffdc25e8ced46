"""Every notebook runs top to bottom with tiny settings and writes its export.

The notebooks fine-tune the shipped `exports/<model>/model.keras` on real TFDS data, so these tests
need the prepared data beside the checkout (`../shared/tfds`) and skip without it. A cell inserted
after each notebook's `parameters` cell sets the tiny values (as papermill would).

A notebook runs in its own kernel process, mostly on one core, for one to three minutes. So when
these tests are collected, the notebooks start at the beginning of the session, one at a time in a
background thread (`start_in_background`, called from conftest.py), while the other tests use the
second core; these tests run last (two notebooks at a time from then on) and check what each
notebook wrote.
"""

import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

TINY = {  # the longest first (they start in this order)
    "pixelcnn": dict(EPOCHS=1, STEPS=2, EVAL_IMAGES=100, SAMPLES=2, CARD_PER_LABEL=1),  # a card grid of 10, not 80
    "diffusion": dict(EPOCHS=1, STEPS=2, EVAL_SAMPLES=100, DDIM_STEPS=2, CARD_PER_LABEL=1),
    "vae": dict(EPOCHS=1, STEPS=2, IWAE_IMAGES=2),
    "wavenet": dict(EPOCHS=1, STEPS=2, EVAL_CLIPS=4),
    "text": dict(MODEL="transformer", EPOCHS=1, STEPS=2),
    "gan": dict(STEPS=2, EVAL_SAMPLES=200),
    "text-lstm": dict(MODEL="lstm", EPOCHS=1, STEPS=2),
}
MODEL_OF = {"text": "transformer", "text-lstm": "lstm"}


def notebook_env() -> dict:
    """The kernel's environment: this one, with the judges shipped in exports/classifiers (not the
    empty test folder the other tests use)."""
    return dict(os.environ, ZOO_CLASSIFIERS=str(ROOT / "exports" / "classifiers"), TF_CPP_MIN_LOG_LEVEL="2")


def run_notebook(case: str, data_dir: str, out: Path, env: dict) -> Path:
    """Runs notebooks/<name>.ipynb with the tiny settings of `case` in a kernel with `env`, exporting to `out`."""
    import nbformat
    from nbclient import NotebookClient

    name = case.split("-")[0]
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    index = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
    params = dict(TINY[case], OUT=str(out), DATA_DIR=str(data_dir))
    if "RECORD" in parameters(name):  # its run's record beside the export, not in notebooks/records.jsonl
        params["RECORD"] = str(out.parent / "record.jsonl")
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(
        "\n".join(f"{k} = {v!r}" for k, v in params.items()), metadata={"tags": ["injected-parameters"]}))
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute(env=env)
    return out


def run_notebook_process(case: str, data_dir: str, out: Path, env: dict, started=None) -> Path:
    """`run_notebook` in a Python process of its own (this file run as a script); `started(process)`
    is called with its `subprocess.Popen`. Not in this one's thread: while the tests import TFDS,
    etils' lazy imports replace `builtins.__import__` for the whole process, so a thread importing
    nbclient meanwhile got placeholder modules (CI failed with "No module named 'msgpack'" from
    jupyter_client, which imports it only if it is there)."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, __file__, case, str(data_dir), str(out)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if started is not None:
        started(process)
    _, stderr = process.communicate()
    if process.returncode:
        raise RuntimeError(f"notebook {case} failed (exit {process.returncode}):\n{stderr[-6000:]}")
    return out


class _Background:
    """Notebooks run one after another, each in its own process, from a daemon thread; `result(case)`
    waits for one. The first wait starts a second thread on the notebooks not yet started: the other
    tests are done by then."""

    def __init__(self, cases, data_dir):
        self.root = Path(tempfile.mkdtemp(prefix="zoo-notebooks-"))
        self.pending, self.lock = list(cases), threading.Lock()
        self.done = {case: threading.Event() for case in cases}
        self.outcome, self.stopped, self.workers, self.running = {}, False, 0, set()
        self.data_dir = data_dir
        self.env = notebook_env()  # taken now: the tests running meanwhile may change os.environ for a while
        self._add_worker()

    def _add_worker(self):
        self.workers += 1
        threading.Thread(target=self._work, daemon=True, name=f"notebooks-{self.workers}").start()

    def _work(self):
        while not self.stopped:
            with self.lock:
                if not self.pending:
                    return
                case = self.pending.pop(0)
            try:
                self.outcome[case] = run_notebook_process(case, self.data_dir, self.root / case / "export", self.env,
                                                          started=self._started)
            except BaseException as error:  # handed to the test that checks this notebook
                self.outcome[case] = error
            self.done[case].set()

    def _started(self, process):
        with self.lock:
            self.running.add(process)
            if self.stopped:  # the session ended while it started
                process.kill()

    def stop(self):
        """No further notebook starts; the ones running are ended (their kernels exit with their
        parent) and the folder removed, so an interrupted or failed session leaves neither processes
        nor files behind."""
        import subprocess

        with self.lock:
            self.stopped, running = True, list(self.running)
        for process in running:
            process.terminate()  # nothing, for one that has ended
        for process in running:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def result(self, case) -> Path:
        with self.lock:
            if self.workers == 1 and self.pending:
                self._add_worker()
        self.done[case].wait()
        outcome = self.outcome[case]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


_background = None


def start_in_background(cases, data_dir):
    """Starts running the notebooks of `cases` (conftest.py calls it once the tests are collected)."""
    global _background
    if _background is None and cases and data_dir and _notebook_packages():
        _background = _Background(cases, data_dir)


def stop_background():
    """The session is over: see `_Background.stop`."""
    if _background is not None:
        _background.stop()


def _notebook_packages() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(p) for p in ("nbformat", "nbclient"))


@pytest.mark.parametrize("case", list(TINY))
def test_notebook_runs_and_exports(case, real_tfds, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")

    name = case.split("-")[0]
    model = MODEL_OF.get(case, name)
    if not (ROOT / "exports" / model / "model.keras").exists():
        pytest.fail(f"exports/{model} is missing: the notebook has nothing to fine-tune")
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for cell in notebook.cells:  # committed outputs: what a reader needs, no library chatter
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("output_type") == "stream" else ""
            assert not any(noise in text for noise in CHATTER), f"{name}.ipynb's outputs hold: {text[:300]}"
    if _background is not None and case in _background.done:
        out = _background.result(case)
    else:  # not started with the session (the test was called some other way): run it now
        out = run_notebook(case, real_tfds, tmp_path / "export", notebook_env())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == model and manifest["preset"] == "finetuned"
    assert manifest["training"]["note"].startswith(("fine-tuned", "adapted"))
    assert (out / "README.md").exists()
    if "CARD_PER_LABEL" in TINY[case]:  # the card's grid: this many images per digit
        assert manifest["runtime"]["sample_defaults"]["per_label"] == TINY[case]["CARD_PER_LABEL"]
    if "RECORD" in parameters(name):  # the run recorded its parameters and figures
        [record] = [json.loads(line) for line in (out.parent / "record.jsonl").read_text().splitlines()]
        assert record["notebook"] == name and record["wall_seconds"] > 0
        assert all(record["params"][k] == v for k, v in TINY[case].items() if k in record["params"])
        assert record["before"] and record["after"]


CHATTER = ("cuInit", "cuda drivers", "WARNING:root", "absl::", "oneDNN custom operations", "UserWarning", "rebuild TensorFlow")


def parameters(name: str) -> dict:
    """The values the `parameters` cell of notebooks/<name>.ipynb assigns (constants only)."""
    import ast

    import nbformat

    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    [cell] = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body
            if isinstance(node, ast.Assign)}


def test_notebook_defaults_are_the_recorded_runs():
    """Each notebook's default parameters are those of its last run in notebooks/records.jsonl, the
    run the notebooks' README reports (a changed default without a new run fails)."""
    records = {}
    for line in (NOTEBOOKS / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record["notebook"]] = record
    assert "gan" in records
    for name, record in records.items():
        defaults = parameters(name)
        assert {k: defaults[k] for k in record["params"]} == record["params"], name


def test_quiet_imports_silences_file_descriptor_2_only_inside():
    """What a library writes to descriptor 2 inside the block (as TensorFlow's C++ start-up does) is
    dropped; after it, descriptor 2 works again, and an error inside still raises."""
    import subprocess
    import sys

    code = ("import os\nfrom zoo.quiet import quiet_imports\n"
            "with quiet_imports():\n    os.write(2, b'chatter\\n')\n"
            "os.write(2, b'after\\n')\n"
            "try:\n    with quiet_imports():\n        raise KeyError('inside')\n"
            "except KeyError:\n    os.write(2, b'raised\\n')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "after\nraised\n", done.stderr


if __name__ == "__main__":  # run_notebook_process: python tests/test_notebooks.py CASE DATA_DIR OUT
    import sys

    run_notebook(sys.argv[1], sys.argv[2], Path(sys.argv[3]), dict(os.environ))
