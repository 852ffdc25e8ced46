"""`--strategy multiworker`: two worker processes on loopback train as one process would.

Each test starts `python -m zoo train` processes (TFDS mocked) on free loopback ports, in a network
namespace of their own where the system allows one (Loopback), CPU only, one thread each, in
sessions of their own that are always killed, with hard timeouts.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import ROOT
from zoo.config import UsageError
from zoo.distributed import STATUS, common_place, read_cluster

TRAIN = """
import sys
from tests.conftest import mock_data
from zoo.cli import main
with mock_data():
    sys.exit(main(sys.argv[1:]))
"""
TIMEOUT = 240  # seconds a training in these tests may take at most
# The tolerance of "the same training": float32 sums in another order (measured: losses equal to 1e-6,
# weights to 4e-7 after 3 steps). Training on half the batch without the other half's gradients
# (what a worker alone does) misses it by orders of magnitude: test_a_worker_alone_fails_the_comparison.
RTOL, WEIGHTS_ATOL = 1e-4, 1e-5
# One model of each training-step family, dropout included (the tiny presets' own settings).
FAMILIES = ("lstm", "gan", "vae", "diffusion", "wavenet")


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def environment(extra=None):
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "3", "ZOO_CLUSTER_TIMEOUT": "60", "ZOO_PEER_TIMEOUT": "5", **(extra or {})}


def command(model, run_dir, sets, strategy="multiworker"):
    argv = [sys.executable, "-c", TRAIN, "train", model, "--preset", "tiny", "--run-dir", str(run_dir),
            "--no-eval", "--no-export", "--strategy", strategy]
    for s in sets:
        argv += ["--set", s]
    return argv


class Loopback:
    """A network namespace with a loopback interface only, for the workers: TensorFlow's gRPC server
    listens on every interface, and in there no other machine can reach it. Without the tools or the
    privileges for one (unshare, nsenter, ip), the workers use the host's network on 127.0.0.1."""

    def __init__(self):
        self.holder = None
        if all(shutil.which(tool) for tool in ("unshare", "nsenter", "ip")):
            holder = subprocess.Popen(["unshare", "--net", "sh", "-c", "ip link set lo up && echo up && exec sleep 3600"],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                      start_new_session=True)
            if holder.stdout.readline().strip() == "up":
                self.holder = holder
            else:
                holder.kill()
                holder.wait()

    def command(self, argv):
        return (["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--"] if self.holder else []) + argv

    def close(self):
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()


class Workers:
    """Worker processes of one cluster, in a Loopback; their sessions are killed on leaving."""

    def __init__(self, model, run_dir, sets, n=2, env=None, per_worker_sets=None):
        self.addresses = [f"localhost:{p}" for p in free_ports(n)]
        self.model, self.run_dir, self.sets, self.env = model, run_dir, sets, env
        self.per_worker_sets = per_worker_sets or [[] for _ in range(n)]
        self.processes, self.network = [], Loopback()

    def start(self, indices=None):
        self.processes = []
        for i in indices if indices is not None else range(len(self.addresses)):
            tf_config = json.dumps({"cluster": {"worker": self.addresses}, "task": {"type": "worker", "index": i}})
            self.processes.append(subprocess.Popen(
                self.network.command(command(self.model, self.run_dir, self.sets + self.per_worker_sets[i])), cwd=ROOT,
                env=environment(dict(self.env or {}, TF_CONFIG=tf_config)), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, start_new_session=True))
        return self

    def wait(self, timeout=TIMEOUT):
        results = []
        for p in self.processes:
            out, err = p.communicate(timeout=timeout)
            results.append((p.returncode, out, err))
        return results

    def kill(self, i):
        os.killpg(self.processes[i].pid, signal.SIGKILL)
        self.processes[i].wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.network.close()


def single(model, run_dir, sets) -> subprocess.Popen:
    """One process training as the workers do (started beside them: the machine has cores to spare)."""
    return subprocess.Popen(command(model, run_dir, sets, strategy="default"), cwd=ROOT, env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finished(process):
    try:
        _, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, err[-3000:]


def history(run_dir):
    from zoo.train import read_history

    return read_history(run_dir / "history.csv")


def weights(run_dir):
    from zoo.models import load_model

    return load_model(run_dir / "model.keras").get_weights()


def same_training(a, b) -> bool:
    """Losses step by step (one step an epoch) and final weights within RTOL and WEIGHTS_ATOL."""
    ha, hb = history(a), history(b)
    if len(ha) != len(hb):
        return False
    for ra, rb in zip(ha, hb):
        keys = [k for k in ra if k != "epoch_seconds" and not k.startswith("val_")]
        if sorted(keys) != sorted(k for k in rb if k != "epoch_seconds" and not k.startswith("val_")):
            return False
        if not all(np.isclose(ra[k], rb[k], rtol=RTOL, atol=0) for k in keys):
            return False
    return all(np.abs(x - y).max() <= WEIGHTS_ATOL for x, y in zip(weights(a), weights(b)))


def last_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.mark.parametrize("model", FAMILIES)
def test_two_workers_train_as_one_process_with_the_same_global_batch(model, tmp_path):
    sets = ["epochs=3", "steps_per_epoch=1"]
    with Workers(model, tmp_path / "run", sets) as workers:
        reference = single(model, tmp_path / "single", sets)
        results = workers.start().wait()
        finished(reference)
    for i, (code, out, err) in enumerate(results):
        assert code == 0, f"worker {i}: {err[-3000:]}"
    assert same_training(tmp_path / "run", tmp_path / "single")

    # Only the chief wrote the run folder; worker 1's own folder is gone with the finished run.
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["workers"] == 2 and run["strategy"] == "multiworker" and run["optimizer_steps"] == 3
    assert not (tmp_path / "run.worker-1").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "single"]
    # Each worker took its half of every global batch, and the halves differ.
    seen = [re.search(rf"worker {i} of 2: 3 steps on (\d+) examples of its own \(data checksum (\d+)\)", out)
            for i, (_, out, _) in enumerate(results)]
    assert all(seen), [out[-2000:] for _, out, _ in results]
    batch = json.loads((tmp_path / "run" / "config.json").read_text())["batch_size"]
    assert [int(s.group(1)) for s in seen] == [3 * batch // 2] * 2
    assert seen[0].group(2) != seen[1].group(2)


def test_a_worker_alone_fails_the_comparison(tmp_path):
    """The comparison's teeth: what worker 0 trains without worker 1's gradients (its half of each batch)."""
    sets, batch = ["epochs=3", "steps_per_epoch=1"], 4  # the tiny preset's
    runs = [single("rnn", tmp_path / "whole", sets), single("rnn", tmp_path / "half", sets + [f"batch_size={batch // 2}"])]
    for run in runs:
        finished(run)
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["batch_size"] == batch
    assert not same_training(tmp_path / "half", tmp_path / "whole")


def test_a_killed_worker_stops_the_others_in_one_line_and_all_resume_from_the_backup(tmp_path):
    run = tmp_path / "run"
    sets = ["epochs=3", "steps_per_epoch=300"]
    with Workers("rnn", run, sets, env={"ZOO_BACKUP_SECONDS": "0.3"}) as workers:
        workers.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and all(p.poll() is None for p in workers.processes):
            path = run / "backup" / "state.json"
            try:
                state = json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                state = None
            if state and state["epoch"] >= 1 and state["step"] > 0:
                break
            time.sleep(0.05)
        assert all(p.poll() is None for p in workers.processes), workers.processes[0].communicate()[1][-3000:]
        workers.kill(1)
        killed = time.monotonic()
        out, err = workers.processes[0].communicate(timeout=60)
        code = workers.processes[0].returncode
        assert time.monotonic() - killed < 60
        assert code == 1
        assert last_line(err).startswith("error: worker 0: lost the cluster at epoch 2") and \
            "(worker 1 stopped answering)" in last_line(err) and "Traceback" not in err, err[-3000:]
        from zoo.train import Backup

        held = [Backup.places(run / "backup"), Backup.places(tmp_path / "run.worker-1" / "backup")]
        if held[1][0] == held[0][0] and len(held[1]) == 2:  # as if killed while saving its newest backup
            Backup.roll_back(tmp_path / "run.worker-1" / "backup")
            held[1] = held[1][1:]
        # The timed backups were taken at the same steps; worker 1, killed while saving one, holds the
        # one before it, which the chief keeps too: both resume from the newest they share.
        epoch, step = max(set(held[0]) & set(held[1]))
        assert held[0][0] != (epoch, step)
        assert epoch >= 1, held
        results = workers.start().wait()
    for i, (code, out, err) in enumerate(results):
        assert code == 0, f"worker {i}: {err[-3000:]}"
        assert f"after {epoch} completed epoch(s)" + (f" and {step} step(s) of the next" if step else "") in out
    info = json.loads((run / "run.json").read_text())
    assert info["resumed"] and info["epochs_completed"] == 3
    assert info["optimizer_steps"] == 3 * 300  # the steps after the backup were redone; none skipped or doubled
    assert [int(r["epoch"]) for r in history(run)] == [0, 1, 2]
    assert not (run / "backup").exists() and not (tmp_path / "run.worker-1").exists()


def row(status, place=(-1, -1), previous=(-1, -1)):
    return [7, STATUS[status], *place, *previous]


@pytest.mark.parametrize("rows, place", [
    ([row("new"), row("new")], (-1, -1)),
    ([row("resume", (1, 18), (1, 0)), row("resume", (1, 18), (1, 0))], (1, 18)),
    # worker 1 killed while the chief saved (1, 18) and before it did: both go back to (1, 0)
    ([row("resume", (1, 18), (1, 0)), row("resume", (1, 0), (0, 40))], (1, 0)),
    ([row("resume", (0, 40)), row("resume", (1, 0), (0, 40))], (0, 40)),
    ([row("resume", (2, 0), (1, 5)), row("resume", (1, 0), (0, 40))], None),
    ([row("resume", (0, 3)), row("new")], None),
])
def test_workers_resume_from_the_newest_backup_they_all_hold(rows, place):
    assert common_place(rows) == place


def test_workers_started_with_other_settings_stop_in_one_line(tmp_path):
    with Workers("rnn", tmp_path / "run", ["epochs=1"], per_worker_sets=[[], ["steps_per_epoch=7"]]) as workers:
        results = workers.start().wait()
    for code, out, err in results:
        assert code == 1 and "Traceback" not in err, err[-3000:]
        assert last_line(err).startswith("error: worker 1 was started with another model, preset, --set values")


def test_a_cluster_that_is_not_all_there_stops_in_one_line(tmp_path):
    with Workers("rnn", tmp_path / "run", [], env={"ZOO_CLUSTER_TIMEOUT": "5"}) as workers:
        start = time.monotonic()
        [(code, out, err)] = workers.start(indices=[0]).wait(timeout=60)
    assert time.monotonic() - start < 60
    assert code == 1, err[-3000:]
    assert last_line(err) == (f"error: worker 0 of 2: the other workers ({workers.addresses[1]}) were not all up "
                              "within 5 s ($ZOO_CLUSTER_TIMEOUT): start every worker, each with the same TF_CONFIG "
                              "cluster and its own index")
    assert "Traceback" not in err and not (tmp_path / "run" / "history.csv").exists()


EXAMPLE = '{"cluster": {"worker": ["host1:23456", "host2:23456"]}, "task": {"type": "worker", "index": 0}}'


@pytest.mark.parametrize("text, says", [
    (None, "needs TF_CONFIG to describe the cluster"),
    ("{", "TF_CONFIG is not JSON"),
    ("[1]", "needs a 'cluster' and a 'task' object"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {}}', "task type must be 'worker'"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "needs a list of workers"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', "worker 'a' is not host:port"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}', "names a worker twice"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}', "has a 'ps' job"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     "index must be a whole number from 0 to 1, got 2"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": true}}', "got True"),
])
def test_a_malformed_tf_config_is_one_line(text, says):
    with pytest.raises(UsageError) as e:
        read_cluster(text)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_the_command_line_refuses_a_malformed_tf_config_before_tensorflow(tmp_path):
    result = subprocess.run([sys.executable, "-m", "zoo", "train", "rnn", "--preset", "tiny", "--strategy",
                             "multiworker", "--run-dir", str(tmp_path / "run")], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env=dict(os.environ, TF_CONFIG="{not json"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: TF_CONFIG is not JSON") and result.stderr.count("\n") == 1
    assert read_cluster(EXAMPLE).workers == ("host1:23456", "host2:23456")
    assert not (tmp_path / "run").exists()
