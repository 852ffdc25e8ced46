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

    # A completed run started again is a fresh run.
    epochs = Epochs()
    train("lstm", cfg, "tiny", tmp_path, callbacks=[epochs], verbose=0)
    assert epochs.seen == [0, 1, 2, 3]
    assert len(read_history(tmp_path / "history.csv")) == 4


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
    m.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=1, verbose=0)
    np.savez(OUT, *m.get_weights())
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
            weights.append([f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))])
    initial_moved = max(float(np.abs(w).max()) for w in weights[0])
    assert initial_moved > 0
    for single, mirrored in zip(*weights):
        np.testing.assert_allclose(mirrored, single, atol=1e-5)  # gradients averaged, not summed


def test_train_on_real_tiny_shakespeare(real_tfds, tmp_path):
    from zoo.evaluate import evaluate

    cfg = registry.preset("rnn", "tiny", ["epochs=1", "steps_per_epoch=5"])
    train("rnn", cfg, "tiny", tmp_path, data_dir=real_tfds, verbose=0)
    metrics = evaluate("rnn", cfg, tmp_path, data_dir=real_tfds)
    assert metrics["test_chars_scored"] >= 55700
    assert 1.0 < metrics["test_nats_per_char"] < 4.3  # ln(65) = 4.17 for a model that knows nothing
