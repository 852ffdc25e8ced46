"""The base install is the runtime: a wheel of this repository, installed into an empty venv with its
base dependencies only (numpy, onnxruntime, pillow), samples from every shipped export, and TensorFlow
is nowhere in that venv."""

import subprocess
import sys

import pytest

from conftest import ROOT

SAMPLES = {  # small requests: the point is that each export loads and samples, not what it makes
    "rnn": ["--length", "20"], "lstm": ["--length", "20"], "transformer": ["--length", "20"],
    "gan": ["--labels", "1,2", "--per-label", "1"], "vae": ["--labels", "1", "--per-label", "1"],
    "pixelcnn": ["--labels", "3", "--per-label", "1"],
    "diffusion": ["--labels", "4", "--per-label", "1", "--steps", "2"],
    "wavenet": ["--digits", "3", "--seconds", "0.2"],
}


def test_the_wheel_installs_alone_and_samples_every_export(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, timeout=300, capture_output=True)
    (wheel,) = wheels.glob("zoo-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], timeout=600,
                             capture_output=True, text=True)
    if install.returncode and "No matching distribution" in install.stderr + install.stdout:
        pytest.skip(f"the package index cannot be reached: {install.stderr.strip().splitlines()[-1]}")
    assert install.returncode == 0, install.stderr
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], check=True, timeout=60,
                               capture_output=True, text=True).stdout.lower()
    for heavy in ("tensorflow", "keras", "tf2onnx", "onnx=="):
        assert heavy not in installed, f"{heavy} came with the base install:\n{installed}"
    for model, options in SAMPLES.items():
        out = tmp_path / (model if model == "wavenet" else f"{model}.png")
        run = subprocess.run([str(python), "-m", "zoo.runtime", "sample", str(ROOT / "exports" / model),
                              "--seed", "1", *options, *(["--out", str(out)] if model not in ("rnn", "lstm", "transformer")
                                                         else [])],
                             cwd=tmp_path, timeout=300, capture_output=True, text=True)
        assert run.returncode == 0, f"{model}: {run.stderr}"
        assert run.stdout.strip(), model
