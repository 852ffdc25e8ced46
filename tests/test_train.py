"""Training: run folder, resume after an interruption, distribution strategies, real-data smoke."""

import json
import textwrap

import keras
import numpy as np
import pytest

from tests.conftest import run_python
from zoo import registry
from zoo.train import read_history, train


def test_run_folder_contents(trained):
    run = trained("rnn")["run"]
    for name in ("model.keras", "best.keras", "history.csv", "run.json", "metrics.json", "logs"):
        assert (run / name).exists(), name
    assert not (run / "backup").exists()  # removed once training completed
    info = json.loads((run / "run.json").read_text())
    assert info["model"] == "rnn" and info["preset"] == "tiny" and info["epochs_completed"] == 2
    assert info["params"] > 0 and info["train_seconds"] > 0 and "tensorflow" in info["versions"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_nats_per_char"] > 0 and metrics["test_chars_scored"] > 0


class Interrupt(keras.callbacks.Callback):
    """Stands in for a killed process: dies at the end of epoch `at` (after the backup)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt(f"killed after epoch {epoch}")


class Epochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)


def test_interrupted_run_resumes_where_it_stopped(tmp_path, mock_tfds, capsys):
    cfg = registry.preset("lstm", "tiny", ["epochs=4"])
    with pytest.raises(KeyboardInterrupt):
        train("lstm", cfg, "tiny", tmp_path, callbacks=[Interrupt(at=1)], verbose=0)
    assert (tmp_path / "backup").exists()
    assert [int(r["epoch"]) for r in read_history(tmp_path / "history.csv")] == [0, 1]

    epochs = Epochs()
    train("lstm", cfg, "tiny", tmp_path, callbacks=[epochs], verbose=0)
    assert epochs.seen == [2, 3]  # continued, not restarted
    assert "resuming lstm" in capsys.readouterr().out
    assert [int(r["epoch"]) for r in read_history(tmp_path / "history.csv")] == [0, 1, 2, 3]
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["resumed"] and info["epochs_completed"] == 4

    # A finished run started again trains nothing and deletes nothing; with fresh=True it trains
    # again and the finished run is kept beside it.
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.is_file()}
    capsys.readouterr()
    assert train("lstm", cfg, "tiny", tmp_path, verbose=0) is None
    assert "holds a finished run (run.json): nothing to train; add --fresh" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.is_file()} == before
    epochs = Epochs()
    train("lstm", cfg, "tiny", tmp_path, callbacks=[epochs], verbose=0, fresh=True)
    assert epochs.seen == [0, 1, 2, 3]
    assert len(read_history(tmp_path / "history.csv")) == 4
    kept = [p for p in tmp_path.parent.iterdir() if p.name.startswith(tmp_path.name + ".")]
    assert len(kept) == 1 and len(read_history(kept[0] / "history.csv")) == 4 and (kept[0] / "model.keras").exists()


def test_a_run_killed_mid_epoch_resumes_at_its_step(tmp_path, mock_tfds, capsys, monkeypatch):
    from zoo import train as ztrain

    backups = []

    class Spy(ztrain.Backup):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, seconds=1e9, **kwargs)
            backups.append(self)

    monkeypatch.setattr(ztrain, "Backup", Spy)
    cfg = registry.preset("rnn", "tiny", ["epochs=3", "steps_per_epoch=5"])
    steps = []

    class Steps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(int(self.model.optimizer.iterations.numpy()))

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self._epoch == 1 and batch == 1:
                backups[-1].seconds = 0.0  # the next step ends with a backup: 3 steps into epoch 1
            if self._epoch == 1 and batch == 2:
                raise KeyboardInterrupt("killed mid-epoch")

    with pytest.raises(KeyboardInterrupt):
        train("rnn", cfg, "tiny", tmp_path, callbacks=[Steps(), Kill()], verbose=0)
    assert json.loads((tmp_path / "backup" / "state.json").read_text())["step"] == 3
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
    steps.clear()
    train("rnn", cfg, "tiny", tmp_path, callbacks=[Steps()], verbose=0)
    assert "after 1 completed epoch(s) and 3 step(s) of the next" in capsys.readouterr().out
    assert steps == list(range(9, 16))  # the optimizer's step count (and its schedule) goes on
    assert [int(r["epoch"]) for r in read_history(tmp_path / "history.csv")] == [0, 1, 2]


def test_a_kill_while_saving_a_backup_leaves_the_one_before_it_to_resume_from(tmp_path, monkeypatch):
    from zoo.train import Backup

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    backup = Backup(tmp_path)
    backup.set_model(model)
    first = [w.copy() for w in model.get_weights()]
    backup.save(1, 0, 0.0)
    model.set_weights([w + 1 for w in first])
    backup.save(1, 5, 2.0)
    assert Backup.places(tmp_path) == [(1, 5), (1, 0)]

    def killed(*args, **kwargs):  # the weights file is half written when the process dies
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(model, "save_weights", killed)
    with pytest.raises(KeyboardInterrupt):
        backup.save(1, 9, 3.0)
    assert Backup.places(tmp_path) == [(1, 5), (1, 0)]  # both whole, neither named for weights not saved
    assert sorted(p.name for p in tmp_path.glob("*.weights.h5")) == ["epoch1-step0.weights.h5",
                                                                     "epoch1-step5.weights.h5"]
    # A worker of a cluster whose peer holds only (1, 0) goes back to it, with its weights.
    Backup.roll_back(tmp_path)
    assert Backup.places(tmp_path) == [(1, 0)]
    model.set_weights([w * 0 for w in first])
    backup.on_train_begin()
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), first))


def test_resuming_with_another_config_is_refused(tmp_path, mock_tfds):
    from zoo.config import UsageError

    cfg = registry.preset("rnn", "tiny", ["epochs=3"])
    with pytest.raises(KeyboardInterrupt):
        train("rnn", cfg, "tiny", tmp_path, callbacks=[Interrupt(at=0)], verbose=0)
    other = registry.preset("rnn", "tiny", ["epochs=3", "batch_size=2"])
    with pytest.raises(UsageError, match=r"holds an unfinished run with another config \(batch_size=2 \(was 4\)\).*--fresh"):
        train("rnn", other, "tiny", tmp_path, verbose=0)
    assert train("rnn", other, "tiny", tmp_path, verbose=0, fresh=True) is not None


def test_a_resume_compares_configs_as_saved_and_ignores_evaluation_keys(tmp_path):
    from zoo.train import prepare_run_dir

    config = {"widths": (8, 16), "epochs": 3, "eval_rows": ("ddim-5",)}
    assert prepare_run_dir(tmp_path, config, fresh=False) == "new"
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "state.json").write_text('{"epoch": 1, "step": 0}')
    assert prepare_run_dir(tmp_path, config, False, ("eval_rows",)) == "resume"  # tuples saved as lists
    assert prepare_run_dir(tmp_path, dict(config, eval_rows=("ddim-9",)), False, ("eval_rows",)) == "resume"


MIRRORED_TRAIN = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tests.conftest import mock_data
    from zoo import registry
    from zoo.train import train

    # Two training steps through zoo.train under MirroredStrategy on two logical CPUs.
    cfg = registry.preset("rnn", "tiny", ["epochs=1", "steps_per_epoch=2"])
    with mock_data():
        train("rnn", cfg, "tiny", RUN_DIR, strategy="mirrored", verbose=0)
    run = json.load(open(RUN_DIR + "/run.json"))
    print(json.dumps({"strategy": run["strategy"], "epochs": run["epochs_completed"],
                      "replicas": tf.distribute.MirroredStrategy().num_replicas_in_sync}))
""")

# One strategy a process: two MirroredStrategy objects in one process collide in their collectives.
MIRRORED_STEP = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from zoo.models.rnn import RNN

    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, (4, 6)).astype(np.int32); y = rng.integers(0, 20, (4, 6)).astype(np.int32)
    strategy = tf.distribute.MirroredStrategy() if MIRRORED else tf.distribute.get_strategy()
    keras.utils.set_random_seed(1)
    with strategy.scope():
        m = RNN("abcdefghijklmnopqrst", embedding_dim=4, rnn_units=8)
        m.build((None, None))
        m.compile(optimizer=keras.optimizers.SGD(0.5))
    before = m.get_weights()
    m.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=1, verbose=0)
    np.savez(OUT, *before, *m.get_weights())  # arr_0..: before the step, then after it
    print(strategy.num_replicas_in_sync)
""")


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    result = run_python(MIRRORED_TRAIN.replace("RUN_DIR", repr(str(tmp_path / "run"))))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"strategy": "mirrored", "epochs": 1, "replicas": 2}


def test_one_mirrored_step_equals_the_same_step_on_one_device(tmp_path):
    weights = []
    for mirrored in (False, True):
        path = tmp_path / f"{mirrored}.npz"
        result = run_python(MIRRORED_STEP.replace("MIRRORED", str(mirrored)).replace("OUT", repr(str(path))))
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == ("2" if mirrored else "1")
        with np.load(path) as f:
            arrays = [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]
        before, after = arrays[: len(arrays) // 2], arrays[len(arrays) // 2 :]
        for b, a in zip(before, after):  # the step moved every weight
            assert np.abs(a - b).max() > 1e-6
        weights.append(after)
    for single, mirrored in zip(*weights):
        np.testing.assert_allclose(mirrored, single, atol=1e-5)  # gradients averaged, not summed


def test_train_on_real_tiny_shakespeare(real_tfds, tmp_path):
    from zoo.evaluate import evaluate

    cfg = registry.preset("rnn", "tiny", ["epochs=1", "steps_per_epoch=5"])
    train("rnn", cfg, "tiny", tmp_path, data_dir=real_tfds, verbose=0)
    metrics = evaluate("rnn", cfg, tmp_path, data_dir=real_tfds)
    assert metrics["test_chars_scored"] >= 55700
    assert 1.0 < metrics["test_nats_per_char"] < 4.3  # ln(65) = 4.17 for a model that knows nothing


KILLABLE_TRAIN = textwrap.dedent("""
    import sys, time
    from tests.conftest import mock_data
    from zoo import train as ztrain
    from zoo.cli import main

    slow = ztrain.Backup.on_train_batch_end
    def on_train_batch_end(self, batch, logs=None):  # steps slow enough to be killed mid-epoch
        time.sleep(0.05)
        slow(self, batch, logs)
    ztrain.Backup.on_train_batch_end = on_train_batch_end
    with mock_data():
        sys.exit(main(sys.argv[1:]))
""")


def test_a_sigkilled_train_process_resumes_mid_epoch_without_losing_or_repeating_steps(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    run = tmp_path / "run"
    argv = [sys.executable, "-c", KILLABLE_TRAIN, "train", "rnn", "--preset", "tiny", "--set", "epochs=3",
            "--set", "steps_per_epoch=40", "--run-dir", str(run), "--no-eval", "--no-export"]
    env = dict(os.environ, ZOO_BACKUP_SECONDS="0.3")
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state, deadline = None, time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        path = run / "backup" / "state.json"
        state = json.loads(path.read_text()) if path.exists() else None
        if state and state["epoch"] >= 1 and state["step"] >= 5:
            break
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[0][-3000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = json.loads((run / "backup" / "state.json").read_text())
    assert killed_at["step"] > 0  # mid-epoch

    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (f"after {killed_at['epoch']} completed epoch(s) and {killed_at['step']} step(s) of the next"
            in result.stdout)
    info = json.loads((run / "run.json").read_text())
    assert info["resumed"] and info["epochs_completed"] == 3
    assert info["optimizer_steps"] == 3 * 40  # the steps after the last backup were redone; none skipped or doubled
    assert [int(r["epoch"]) for r in read_history(run / "history.csv")] == [0, 1, 2]
    assert not (run / "backup").exists()
