"""The `python -m zoo` command line: choices, and one-line errors with exit code 2."""

import json
import os
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
        (["train", "rnn", "--set", "epochs=-3"], "epochs=-3: must be at least 1"),
        (["train", "gan", "--set", "batch_size=0"], "batch_size=0: must be at least 1"),
        (["train", "lstm", "--set", "dropout=1.5"], "dropout=1.5: must be below 1"),
        (["train", "vae", "--set", "learning_rate=nan"], "learning_rate=nan: must be a finite number"),
        (["train", "diffusion", "--set", "eval_rows=ddim-50,dpm-3"], "eval_rows: sampler rows look like ddim-50"),
        (["train", "diffusion", "--set", "eval_rows=ddpm-50"], "DDPM runs every one of the 1000 timesteps"),
        (["train", "transformer", "--set", "seq_len=400"], "seq_len=400 exceeds max_context=320"),
        (["train", "wavenet", "--set", "clip_length=1000"], "clip_length=1000 is not a whole number of 128-sample"),
        (["eval", "wavenet", "--set", "mel_temperature=-1"], "mel_temperature=-1.0: must be >= 0"),
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


def test_sample_bad_option_and_missing_export(tmp_path, capsys, trained):
    """python -m zoo sample is python -m zoo.runtime sample on the model's export: the same options."""
    export = trained("rnn")["export"]
    with pytest.raises(SystemExit) as exit_:
        main(["sample", "rnn", "--export", str(export), "--temprature", "1"])
    assert exit_.value.code == 2 and "unrecognized arguments: --temprature 1" in capsys.readouterr().err
    assert main(["sample", "rnn", "--export", str(export), "--prompt", "\u00e9t\u00e9"]) == 2
    assert "not in the model's vocabulary" in capsys.readouterr().err
    assert main(["sample", "rnn", "--export", str(tmp_path / "missing")]) == 1
    assert "manifest.json not found" in capsys.readouterr().err
    assert main(["sample", "rnn", "--preset", "nosuch"]) == 1  # exports/rnn-nosuch
    assert "exports/rnn-nosuch/manifest.json not found" in capsys.readouterr().err


def test_train_eval_export_sample_through_the_cli(tmp_path, capsys, mock_tfds, monkeypatch):
    run, out = tmp_path / "run", tmp_path / "export"
    common = ["--preset", "tiny", "--run-dir", str(run)]
    assert main(["train", "rnn", *common, "--set", "epochs=1", "--no-export"]) == 0
    assert (run / "model.keras").exists() and (run / "metrics.json").exists()
    first = json.loads((run / "metrics.json").read_text())
    monkeypatch.setenv("ZOO_COMMAND", "the second evaluation")
    assert main(["eval", "rnn", *common]) == 0  # evaluated again: the first evaluation is kept, not lost
    history = (run / "metrics-history.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in history] == [first]
    assert json.loads((run / "metrics.json").read_text())["eval_command"] == "the second evaluation"
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]  # metrics.json written whole, renamed
    assert main(["export", "rnn", "--preset", "tiny", "--run-dir", str(run), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["sample", "rnn", "--export", str(out), "--length", "25", "--seed", "3"]) == 0
    text = capsys.readouterr().out.strip("\n")
    prompt = json.loads((out / "manifest.json").read_text())["runtime"]["sample_defaults"]["prompt"]
    assert text.startswith(prompt) and len(text) == len(prompt) + 25


def test_overrides_train_and_export_into_a_run_folder_of_their_own():
    from zoo.cli import build_parser, export_dir_for, run_dir_for

    def dirs(*argv):
        args = build_parser().parse_args(["train", *argv])
        return str(run_dir_for(args)), str(export_dir_for(args))

    assert dirs("lstm") == ("runs/lstm/default", "exports/lstm")
    assert dirs("lstm", "--preset", "tiny") == ("runs/lstm/tiny", "exports/lstm-tiny")
    # the README's experiment: never over the shipped exports/lstm
    assert dirs("lstm", "--set", "epochs=4", "--set", "lstm_units=256") == (
        "runs/lstm/default+epochs=4,lstm_units=256", "runs/lstm/default+epochs=4,lstm_units=256/export")
    assert dirs("lstm", "--set", "epochs=4", "--out", "x") == ("runs/lstm/default+epochs=4", "x")
    # evaluation-only keys keep the run (and its export): `make eval-vae ARGS="--set iwae_images=10000"`
    assert dirs("vae", "--set", "iwae_images=10000") == ("runs/vae/default", "exports/vae")
    assert dirs("rnn", "--set", "seed=1", "--run-dir", "r") == ("r", "r/export")


NO_TENSORFLOW = """
import sys
for name in ("tensorflow", "keras", "tf2onnx", "tensorflow_datasets"):
    sys.modules[name] = None  # `import tensorflow` now raises ImportError
from zoo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_list_and_sample_work_without_tensorflow(trained, tmp_path):
    export = trained("rnn")["export"]
    run = lambda *args: subprocess.run([sys.executable, "-c", NO_TENSORFLOW, *args], cwd=ROOT,  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    result = run("list")
    assert result.returncode == 0 and result.stdout.split()[0] == "rnn", result.stderr
    result = run("sample", "rnn", "--export", str(export), "--length", "5")
    assert result.returncode == 0, result.stderr
    result = run("sample", "nosuch")
    assert result.returncode == 2 and result.stderr.strip().startswith("error: unknown model 'nosuch'")


def test_a_model_module_missing_a_hook_fails_before_training(monkeypatch, capsys):
    from zoo import registry
    from zoo.models import rnn

    monkeypatch.delattr(rnn, "export_graphs")
    monkeypatch.setattr(registry, "_checked", set())
    assert main(["train", "rnn", "--preset", "tiny", "--run-dir", "/nonexistent/never-made"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: model module zoo.models.rnn lacks export_graphs (zoo.registry.HOOKS)")


def test_usage_errors_after_tensorflow_starts_are_still_one_line():
    result = run_cli("train", "rnn", "--preset", "nosuch")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: unknown preset 'nosuch'; choose one of: default, tiny"]


def test_native_stderr_is_filtered_of_chatter_only(capfd):
    from zoo.cli import filtered_native_stderr

    with filtered_native_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                    b"I0000 00:00:1795528838.761121    7572 cudart_stub.cc:31] Could not find cuda drivers\n"
                    b"E0000 00:00:1795527070.740377    1901 cuda_platform.cc:52] failed call to cuInit\n"
                    b"a real error\n")
    assert capfd.readouterr().err == "a real error\n"


@pytest.mark.parametrize("name", ["rnn", "lstm", "transformer", "gan", "vae", "pixelcnn", "wavenet", "diffusion"])
def test_presets_read_without_tensorflow_equal_the_modules(name):
    import dataclasses

    from zoo import registry

    light, module = registry.presets_module(name), registry.get(name)
    assert light is not module and "tensorflow" not in vars(light)  # its presets module, not the model's
    assert {k: dataclasses.asdict(v) for k, v in light.PRESETS.items()} == {
        k: dataclasses.asdict(v) for k, v in module.PRESETS.items()}
    assert getattr(light, "EVAL_KEYS", ()) == getattr(module, "EVAL_KEYS", ())
    assert hasattr(light, "check_config") == hasattr(module, "check_config")


@pytest.mark.parametrize("args, message", [
    (["train", "rnn", "--preset", "nosuch"], "error: unknown preset 'nosuch'; choose one of: default, tiny"),
    (["train", "wavenet", "--set", "epochs=0"], "error: epochs=0: must be at least 1"),
    (["eval", "diffusion", "--set", "eval_rows=ddim-5x"], "error: eval_rows: sampler rows look like ddim-50, "
                                                          "ddpm-1000 or ddim-50@2 (guidance 2), got 'ddim-5x'"),
    (["export", "transformer", "--set", "seq_len=999"], "error: seq_len=999 exceeds max_context=320"),
])
def test_usage_errors_never_import_tensorflow(args, message):
    result = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [message]
