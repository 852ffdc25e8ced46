"""The `python -m zoo` command line: choices, and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from zoo.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "zoo", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_help_lists_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0
    for sub in ("list", "train", "eval", "export", "sample"):
        assert sub in result.stdout


def test_list(capsys):
    assert main(["list"]) == 0
    assert capsys.readouterr().out.split() == ["rnn", "lstm", "transformer", "gan", "vae", "pixelcnn", "wavenet", "diffusion"]


def test_unknown_model_is_one_line_exit_2_without_tensorflow():
    result = run_cli("train", "nosuchmodel")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown model 'nosuchmodel'; choose one of: rnn, lstm, transformer, gan, vae, pixelcnn, wavenet, diffusion"
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "rnn", "--preset", "huge"], "unknown preset 'huge'; choose one of: default, tiny"),
        (["train", "rnn", "--set", "epochz=3"], "unknown key 'epochz'; valid keys: batch_size, clipnorm,"),
        (["train", "lstm", "--set", "epochs=three"], "--set epochs=three: expected an integer"),
        (["train", "lstm", "--set", "learning_rate=fast"], "--set learning_rate=fast: expected a number"),
        (["eval", "rnn", "--set", "noequals"], "--set 'noequals': expected key=value"),
        (["train", "rnn", "--strategy", "tpu"], "unknown strategy 'tpu'; choose one of: default, mirrored"),
        (["export", "rnn", "--preset", "big"], "unknown preset 'big'"),
    ],
)
def test_bad_requests_exit_2_with_one_line(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_bad_request_in_a_subprocess_has_no_traceback():
    result = run_cli("train", "rnn", "--set", "epochs=1.5")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: --set epochs=1.5: expected an integer"


def test_export_without_training_is_a_clear_error(tmp_path, capsys):
    assert main(["export", "rnn", "--run-dir", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 1
    assert "train first" in capsys.readouterr().err


def test_sample_bad_key_and_missing_export(tmp_path, capsys, trained):
    export = trained("rnn")["export"]
    assert main(["sample", "rnn", "--out", str(export), "--set", "temprature=1"]) == 2
    assert "unknown key 'temprature'; valid keys: length, prompt, seed, temperature, top_k" in capsys.readouterr().err
    assert main(["sample", "rnn", "--out", str(export), "--set", "prompt=\u00e9t\u00e9"]) == 2
    assert "not in the model's vocabulary" in capsys.readouterr().err
    assert main(["sample", "rnn", "--out", str(tmp_path / "missing")]) == 1
    assert "manifest.json not found" in capsys.readouterr().err


def test_train_eval_export_sample_through_the_cli(tmp_path, capsys, mock_tfds):
    run, out = tmp_path / "run", tmp_path / "export"
    common = ["--preset", "tiny", "--run-dir", str(run)]
    assert main(["train", "rnn", *common, "--set", "epochs=1", "--no-export"]) == 0
    assert (run / "model.keras").exists() and (run / "metrics.json").exists()
    assert main(["export", "rnn", "--preset", "tiny", "--run-dir", str(run), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["sample", "rnn", "--out", str(out), "--set", "length=25", "--set", "seed=3"]) == 0
    text = capsys.readouterr().out.strip("\n")
    prompt = json.loads((out / "manifest.json").read_text())["runtime"]["sample_defaults"]["prompt"]
    assert text.startswith(prompt) and len(text) == len(prompt) + 25
