import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
RECURRENT = ["rnn", "lstm"]
TEXT_MODELS = RECURRENT + ["transformer"]
# An int8 variant's test loss may be this much worse than fp32's (nats/char), on any CPU. The tiny
# models' variants came out within 0.002 of fp32 both on a CPU with VNNI and on an emulated AVX2 one
# without; the saturating u8s8 setting used before moved the tiny transformer's by 0.072 there.
INT8_MARGIN = 0.01


def shared_tfds():
    """The real TFDS data dir (../shared/tfds or $TFDS_DATA_DIR), or None."""
    for candidate in (os.environ.get("TFDS_DATA_DIR"), ROOT.parent / "shared" / "tfds"):
        if candidate and (Path(candidate) / "tiny_shakespeare").is_dir():
            return str(candidate)
    return None


@pytest.fixture
def real_tfds():
    path = shared_tfds()
    if path is None:
        pytest.skip("real TFDS data not found (set TFDS_DATA_DIR or place it in ../shared/tfds)")
    return path


def mock_data():
    """TFDS datasets replaced by small random ones (tfds.testing.mock_data).

    The mock reports datasets as not prepared and replaces the download itself, so zoo.data's
    offline check is told the network is up.
    """
    import contextlib
    from unittest import mock

    import tensorflow_datasets as tfds

    from zoo import data

    stack = contextlib.ExitStack()
    stack.enter_context(tfds.testing.mock_data(num_examples=30))
    stack.enter_context(mock.patch.object(data, "_online", return_value=True))
    # The mock's random filenames carry no speaker: spoken digits come from fake_audio_clips.
    stack.enter_context(mock.patch.object(data, "audio_clips", fake_audio_clips))
    return stack


def fake_audio_clips(name="spoken_digit", split="train", data_dir=None, download=True, speakers=("ann", "bob", "theo"),
                     per_digit=3):
    """spoken_digit-like clips: a tone per digit with noise, named <digit>_<speaker>_<index>.wav."""
    import numpy as np

    rng = np.random.default_rng(0)
    clips, labels, filenames = [], [], []
    for speaker in speakers:
        for digit in range(10):
            for index in range(per_digit):
                t = np.arange(int(rng.integers(60, 200))) / 8000.0
                tone = 8000 * np.sin(2 * np.pi * (200 + 60 * digit) * t) + rng.normal(0, 300, t.shape)
                clips.append(tone.astype(np.int64))
                labels.append(digit)
                filenames.append(f"{digit}_{speaker}_{index}.wav")
    return clips, np.asarray(labels, np.int32), filenames


@pytest.fixture
def mock_tfds():
    with mock_data():
        yield


@pytest.fixture(scope="session", autouse=True)
def classifiers_in_tmp(tmp_path_factory):
    """Image metrics train their judge classifier on demand: keep test ones out of exports/."""
    os.environ["ZOO_CLASSIFIERS"] = str(tmp_path_factory.mktemp("classifiers"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Train, evaluate and export a model's tiny preset on mock data, once per session."""
    from zoo import registry
    from zoo.evaluate import evaluate
    from zoo.export import export
    from zoo.train import train

    cache = {}

    def get(name):
        if name not in cache:
            root = tmp_path_factory.mktemp(name)
            cfg = registry.preset(name, "tiny")
            with mock_data():
                model = train(name, cfg, "tiny", root / "run", verbose=0)
                metrics = evaluate(name, cfg, root / "run")
            out = export(name, root / "run", root / "export")
            cache[name] = {"cfg": cfg, "run": root / "run", "export": out, "model": model, "metrics": metrics}
        return cache[name]

    return get


def run_python(code: str, env=None, timeout=300):
    """Run `code` in a fresh interpreter (the project's), from the repo root."""
    import subprocess

    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


NOTEBOOK_TESTS = "tests/test_notebooks.py::"


def pytest_collection_modifyitems(config, items):
    """The notebook tests run last: their notebooks run meanwhile in the background (below)."""
    late = [item for item in items if item.nodeid.startswith(NOTEBOOK_TESTS)]
    if late:
        items[:] = [item for item in items if not item.nodeid.startswith(NOTEBOOK_TESTS)] + late


def _notebook_module():
    return sys.modules.get("test_notebooks") or sys.modules.get("tests.test_notebooks")


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    """Starts the notebooks of the notebook tests selected, one at a time beside the other tests."""
    cases = [item.callspec.params["case"] for item in session.items
             if item.nodeid.startswith(NOTEBOOK_TESTS) and "case" in getattr(getattr(item, "callspec", None), "params", {})]
    if cases and not session.config.option.collectonly and _notebook_module() is not None:
        _notebook_module().start_in_background(cases, shared_tfds())


def pytest_sessionfinish(session):
    if _notebook_module() is not None:
        _notebook_module().stop_background()
