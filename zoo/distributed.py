"""Training across processes and machines: `--strategy multiworker`.

The engine is TensorFlow's own `tf.distribute.MultiWorkerMirroredStrategy`: every worker holds a copy
of the model, computes the gradient of its share of each global batch, and the workers sum their
gradients with all-reduce over gRPC (RING on CPU, NCCL on GPU) before each optimizer step, so N
workers take the steps one process would take on the whole batch.

Keras 3's `model.fit` cannot run under this strategy (keras-team/keras#20585: the distributed batches
reach it as `PerReplica` values it cannot convert), so `train` here runs the zoo's own loop: the
models' `train_step` and `test_step` unchanged, through `strategy.run`, keeping what `fit`'s callbacks
give a single process (zoo.train): a progress line per epoch, timed backups, history.csv, best.keras,
TensorBoard logs and run.json.

- `TF_CONFIG` describes the cluster: `{"cluster": {"worker": ["host:port", ...]}, "task": {"type":
  "worker", "index": i}}`, the same on every worker but the index. Worker 0 is the chief.
- The strategy is made (`start`) before TensorFlow runs any op: collective ops are configured at
  program start-up.
- Every worker runs the whole input pipeline and keeps its share of every global batch (a contiguous
  slice of each component: what tf.data's `AutoShardPolicy.DATA` does, written out so that the
  wavenet's two streams of unequal batch sizes split too). The preset's `batch_size` is the global batch.
- Only the chief writes the run folder (and then evaluates and exports). Worker i writes the same files
  to a folder of its own, RUN_DIR.worker-i, removed when the run finishes: the backups in it are what
  it resumes from. Timed backups are taken at the same step on every worker (the chief's clock decides).
- Faults end in one line: a malformed TF_CONFIG, a cluster that is not all there within
  $ZOO_CLUSTER_TIMEOUT seconds, workers started with different models, presets or settings, backups
  that do not match, a worker lost mid-run (the others stop within $ZOO_PEER_TIMEOUT seconds or so). Starting every worker again resumes from the last backup.
"""

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

from zoo import registry
from zoo.config import UsageError, ZooError

CLUSTER_TIMEOUT = 300.0  # seconds a worker waits for the others at start-up: time to start them by hand
PEER_TIMEOUT = 10.0  # seconds without a heartbeat after which a worker counts as lost: TensorFlow's default


@dataclasses.dataclass(frozen=True)
class Cluster:
    workers: tuple  # "host:port" of each worker, in index order
    index: int  # this worker's

    @property
    def chief(self) -> bool:
        return self.index == 0


def read_cluster(text) -> Cluster:
    """The cluster TF_CONFIG's text describes; a UsageError saying what is wrong with it."""
    example = ('{"cluster": {"worker": ["host1:23456", "host2:23456"]}, "task": {"type": "worker", "index": 0}}')
    if not text:
        raise UsageError(f"--strategy multiworker needs TF_CONFIG to describe the cluster, e.g. {example}")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"TF_CONFIG is not JSON ({e}); it looks like {example}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UsageError(f"TF_CONFIG needs a 'cluster' and a 'task' object, e.g. {example}")
    other = sorted(set(cluster) - {"worker"})
    if other:
        raise UsageError(f"TF_CONFIG's cluster has a {other[0]!r} job: the zoo trains with workers only "
                         "(worker 0 is the chief), e.g. " + example)
    workers = cluster.get("worker")
    if not isinstance(workers, list) or not workers:
        raise UsageError(f"TF_CONFIG's cluster needs a list of workers, e.g. {example}")
    for address in workers:
        host, _, port = str(address).rpartition(":") if isinstance(address, str) else ("", "", "")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"TF_CONFIG's worker {address!r} is not host:port")
    if len(set(workers)) < len(workers):
        raise UsageError(f"TF_CONFIG names a worker twice: {', '.join(workers)}")
    if task.get("type") != "worker":
        raise UsageError(f"TF_CONFIG's task type must be 'worker', got {task.get('type')!r}")
    index = task.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(workers):
        raise UsageError(f"TF_CONFIG's task index must be a whole number from 0 to {len(workers) - 1}, got {index!r}")
    return Cluster(tuple(workers), index)


def seconds_from_env(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise UsageError(f"${name} must be a number of seconds above 0, got {text!r}")
    return value


def start():
    """Read TF_CONFIG and make the strategy, before TensorFlow runs any op: (cluster, strategy). Waits
    for every worker to be up (at most $ZOO_CLUSTER_TIMEOUT seconds); a worker silent for
    $ZOO_PEER_TIMEOUT seconds."""
    cluster = read_cluster(os.environ.get("TF_CONFIG"))
    wait = seconds_from_env("ZOO_CLUSTER_TIMEOUT", CLUSTER_TIMEOUT)
    check = seconds_from_env("ZOO_PEER_TIMEOUT", PEER_TIMEOUT)
    import tensorflow as tf
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    # The coordination service (on worker 0) gathers the workers and watches their heartbeats. The
    # strategy would configure it with TensorFlow's defaults (no limit on the wait for the cluster);
    # configured here first, it waits `wait` seconds and counts a worker `check` seconds silent as lost.
    context.context().configure_coordination_service(
        service_type="standalone", service_leader="/job:worker/replica:0/task:0",
        cluster_register_timeout_in_ms=int(wait * 1000), heartbeat_timeout_in_ms=int(check * 1000),
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name="worker", num_tasks=len(cluster.workers))])
    context.context().coordination_service.cluster_register_with_barrier = True  # the leader waits no longer
    tf.get_logger().setLevel("CRITICAL")  # a lost peer is said in one line, by train()
    peers = ", ".join(a for i, a in enumerate(cluster.workers) if i != cluster.index) or "none"
    late = (f"error: worker {cluster.index} of {len(cluster.workers)}: the other workers ({peers}) were not all up "
            f"within {wait:g} s ($ZOO_CLUSTER_TIMEOUT): start every worker, each with the same TF_CONFIG cluster "
            "and its own index")
    said = threading.Lock()

    def give_up():  # one line, once, whichever of the two below comes first
        if said.acquire(blocking=False):
            os.write(2, (late + "\n").encode())
            os._exit(1)
        time.sleep(60)  # the other one is ending the process

    # TensorFlow gives up after `wait` seconds with DeadlineExceeded (on the leader and the others
    # alike), holding the interpreter meanwhile; the watchdog says the same should it not return.
    watchdog = threading.Timer(wait, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except tf.errors.DeadlineExceededError:
        give_up()
    except (RuntimeError, tf.errors.OpError) as e:
        raise ZooError(f"worker {cluster.index} at {cluster.workers[cluster.index]}: the cluster could not start: "
                       f"{first_line(e)}") from None
    finally:
        watchdog.cancel()
    return cluster, strategy


def first_line(error) -> str:
    """What went wrong, in a line: a lost worker named, else the error's first informative line."""
    text = getattr(error, "message", None) or str(error)
    lost = re.search(r"/job:worker/replica:\d+/task:(\d+)", text)
    if lost and ("unhealthy" in text or "is down" in text or isinstance(error, _unavailable())):
        return f"worker {lost.group(1)} stopped answering"
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.startswith(("Graph execution error", "Detected at node"))]
    return lines[0] if lines else type(error).__name__


def _unavailable():
    import tensorflow as tf

    return tf.errors.UnavailableError


def fingerprint(*parts) -> int:
    """48 bits of a hash of `parts`: exact in a float64 all-reduce."""
    return int.from_bytes(hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).digest()[:6], "big")


def gather(strategy, cluster: Cluster, values: list) -> list:
    """Every worker's `values` (a list of whole numbers below 2**53), on every worker: [worker][i]."""
    import tensorflow as tf

    workers = len(cluster.workers)
    table = [[0.0] * len(values) for _ in range(workers)]
    table[cluster.index] = [float(v) for v in values]

    def replica(_):  # the table from one replica of each worker: the sum holds every worker's row once
        context = tf.distribute.get_replica_context()
        first = tf.equal(context.replica_id_in_sync_group % (context.num_replicas_in_sync // workers), 0)
        return tf.where(first, tf.constant(table, tf.float64), tf.zeros([workers, len(values)], tf.float64))

    summed = strategy.reduce("SUM", strategy.run(replica, args=(tf.constant(0),)), axis=None)
    return [[int(v) for v in row] for row in summed.numpy()]


STATUS = {"new": 0, "resume": 1, "finished": 2}


def common_place(table):
    """Where every worker can resume from, given each one's [_, status, epoch, step, previous epoch,
    previous step] (-1: no backup): the newest backup all of them hold, (-1, -1) when none has one,
    None when they have nothing in common. A worker killed while the others saved a backup has only
    the one before it, which they keep too."""
    if all(row[1] != STATUS["resume"] for row in table):
        return (-1, -1) if len({row[1] for row in table}) == 1 else None
    if any(row[1] != STATUS["resume"] for row in table):
        return None
    held = [{tuple(row[2:4]), tuple(row[4:6])} - {(-1, -1)} for row in table]
    return max(set.intersection(*held), default=None)


def worker_dir(run_dir: Path, cluster: Cluster) -> Path:
    """The folder a worker writes: the run folder for the chief, RUN_DIR.worker-i for worker i."""
    return run_dir if cluster.chief else run_dir.with_name(f"{run_dir.name}.worker-{cluster.index}")


def train(name, cfg, preset_name, run_dir, cluster, strategy, data_dir=None, fresh=False):
    """`zoo.train.train` on the cluster: every worker calls it with the same arguments. Returns the
    trained model on the chief (also saved in run_dir), None on the other workers and when run_dir
    holds a finished run."""
    from zoo.train import Backup, continue_history, monitor_of, prepare_run_dir

    module = registry.get(name)
    run_dir, workers = Path(run_dir), len(cluster.workers)
    replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise UsageError(f"batch_size {cfg.batch_size} does not split evenly over {replicas} replicas "
                         f"({workers} workers): --set batch_size=N with N a multiple of {replicas}")
    own = worker_dir(run_dir, cluster)
    config = dataclasses.asdict(cfg)
    status = prepare_run_dir(own, config, fresh, registry.hook(module, "EVAL_KEYS", ()))
    trained = {k: v for k, v in config.items() if k not in registry.hook(module, "EVAL_KEYS", ())}
    places = Backup.places(own / "backup") if status == "resume" else []
    mine = [fingerprint(name, preset_name, trained, workers), STATUS[status]]
    for place in (places + [(-1, -1)] * 2)[:2]:  # the backup and the one before it; -1: none
        mine += place
    try:
        table = gather(strategy, cluster, mine)
    except Exception as e:  # noqa: BLE001 - any failure of the first collective is the cluster's
        raise ZooError(f"worker {cluster.index}: the workers could not compare their settings: {first_line(e)}") from None
    differ = [i for i, row in enumerate(table) if row[0] != table[0][0]]
    if differ:
        raise ZooError(f"worker {differ[0]} was started with another model, preset, --set values or number of "
                       f"workers than worker 0 ({name} --preset {preset_name} on this one): start every worker "
                       "with the same command")
    if table[0][1] == STATUS["finished"]:
        if not cluster.chief:
            shutil.rmtree(own, ignore_errors=True)
        print(f"{run_dir} holds a finished run (run.json): nothing to train; add --fresh on every worker to train "
              "again (the finished run is kept beside it), or --run-dir for another folder")
        return None
    place = common_place(table)
    if place is None:
        said = "; ".join(f"worker {i}: " + (f"epoch {r[2]} step {r[3]}" if r[1] == STATUS["resume"] else "none")
                         for i, r in enumerate(table))
        raise ZooError(f"the workers' backups do not match ({said}): start every worker with --fresh to train "
                       "afresh (the earlier folders are kept beside the new ones)")
    if place != (-1, -1) and Backup.places(own / "backup")[0] != place:
        Backup.roll_back(own / "backup")  # another worker was killed before it saved the newer backup
    state = Backup.state(own / "backup") or {"epoch": 0, "step": 0, "seconds": 0.0}

    monitor = monitor_of(module)
    best = continue_history(own, name, monitor, status, state)
    print(f"worker {cluster.index} of {workers}" + (" (chief)" if cluster.chief else f": writes {own}")
          + f"; global batch {cfg.batch_size}, {cfg.batch_size // replicas} per replica", flush=True)

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    data = module.load_data(cfg, data_dir)
    with strategy.scope():
        model = module.build_model(cfg, data)
        build_optimizers(model)
        backup = Backup(own / "backup")
        backup.set_model(model)
        if status == "resume":
            backup.on_train_begin()  # the backup's weights and optimizer state
    loop = Loop(model, strategy, data, own, cluster, monitor, best)
    start = time.perf_counter()
    try:
        loop.run(state, cfg.epochs, data.steps_per_epoch, backup)
    except tf.errors.OpError as e:
        raise ZooError(f"worker {cluster.index}: lost the cluster at epoch {loop.epoch + 1}, step {loop.step} "
                       f"({first_line(e)}): start every worker again to resume from the last backup") from None
    seconds = time.perf_counter() - start
    print(f"worker {cluster.index} of {workers}: {loop.steps_run} steps on {loop.examples} examples of its own "
          f"(data checksum {loop.checksum})", flush=True)

    from zoo.train import finish_run

    model = finish_run(name, cfg, preset_name, own, getattr(data, "split_sizes", None), "multiworker",
                       status == "resume", seconds, model, workers=workers)
    if not cluster.chief:
        shutil.rmtree(own, ignore_errors=True)  # its copy of the run: the chief's is the run
        print(f"worker {cluster.index}: trained; the chief (worker 0) evaluates and exports")
        return None
    shutil.rmtree(own / "backup", ignore_errors=True)
    return model


def build_optimizers(model):
    """Create every optimizer's slots now, in the strategy's scope (`fit` does this before its first
    step; inside `strategy.run` they could not be made), each for the variables it steps."""
    from zoo.train import optimizers

    pairs = optimizers(model)
    if getattr(model, "optimizer", None) is not None and all(o is not model.optimizer for o, _ in pairs):
        pairs.append((model.optimizer, model.trainable_variables))  # the GAN's compiled default, as fit builds it
    for optimizer, variables in pairs:
        if not optimizer.built:
            optimizer.build(variables)


class Loop:
    """The training loop of one worker: the same steps on every worker, in the same order."""

    def __init__(self, model, strategy, data, folder, cluster, monitor, best):
        import tensorflow as tf

        self.model, self.strategy, self.folder, self.cluster = model, strategy, Path(folder), cluster
        self.monitor, self.best = monitor, best
        self.epoch = self.step = self.steps_run = self.examples = self.checksum = 0
        self.train_data = self.shares(data.train)
        self.val_data = self.shares(data.val, at_least_one=True) if data.val is not None else None
        self.batches = int(data.train.cardinality())  # -1: endless, else Keras starts it again when done
        self.writers = {k: tf.summary.create_file_writer(str(self.folder / "logs" / k)) for k in ("train", "validation")}

        def replica_train(batch, due):
            model.train_step(batch)
            first = tf.nest.flatten(batch)[0]
            return due, tf.shape(first, out_type=tf.int64)[0], tf.reduce_sum(tf.cast(first, tf.int64))

        @tf.function
        def train_step(iterator, due):
            results = strategy.run(replica_train, args=(next(iterator), due))
            local = strategy.experimental_local_results(results)
            return (strategy.reduce("SUM", results[0], axis=None), tf.add_n([r[1] for r in local]),
                    tf.add_n([r[2] for r in local]))

        def replica_test(batch):
            model.test_step(batch)
            return tf.constant(0)

        @tf.function
        def test_step(batch):
            strategy.run(replica_test, args=(batch,))

        @tf.function
        def results():  # cross-replica reads: each metric's sums over every worker
            return {m.name: m.result() for m in model.metrics}

        self.train_step, self.test_step, self.results = train_step, test_step, results

    def shares(self, dataset, at_least_one=False):
        """Each worker's share of every global batch: for its replicas, slices r of R of each component.
        `at_least_one`: leave out a (last) batch too short to give every replica a row."""
        import tensorflow as tf

        replicas = self.strategy.num_replicas_in_sync
        if at_least_one:
            dataset = dataset.filter(lambda *batch: tf.reduce_all(
                [tf.shape(t)[0] >= replicas for t in tf.nest.flatten(batch)]))

        def make(context):
            local = replicas // context.num_input_pipelines
            first = context.input_pipeline_id * local

            def parts(*batch):
                batch = batch[0] if len(batch) == 1 else batch
                pieces = []
                for r in range(first, first + local):
                    def piece(t, r=r):
                        n = tf.shape(t)[0]
                        return t[n * r // replicas: n * (r + 1) // replicas]
                    pieces.append(tf.nest.map_structure(piece, batch))
                stacked = tf.data.Dataset.from_tensors(pieces[0])
                for p in pieces[1:]:
                    stacked = stacked.concatenate(tf.data.Dataset.from_tensors(p))
                return stacked

            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
            return dataset.with_options(options).flat_map(parts)

        return self.strategy.distribute_datasets_from_function(make)

    def run(self, state, epochs, steps_per_epoch, backup):
        import tensorflow as tf

        iterator, seen = iter(self.train_data), 0
        epoch, done, seconds = state["epoch"], state["step"], state.get("seconds", 0.0)
        last_backup = time.monotonic()
        while epoch < epochs:
            self.epoch, begin = epoch, time.perf_counter()
            for metric in self.model.metrics:
                metric.reset_state()
            for step in range(done, steps_per_epoch):
                self.step = step
                if self.batches > 0 and seen >= self.batches:  # a finite pipeline: start it again, as fit does
                    iterator, seen = iter(self.train_data), 0
                due = float(self.cluster.chief and time.monotonic() - last_backup >= backup.seconds)
                agreed, rows, checksum = self.train_step(iterator, tf.constant(due, tf.float32))
                seen, self.steps_run = seen + 1, self.steps_run + 1
                self.examples += int(rows)
                self.checksum = (self.checksum + int(checksum)) % (1 << 48)
                if float(agreed) > 0:
                    backup.save(epoch, step + 1, time.perf_counter() - begin + seconds)
                    last_backup = time.monotonic()
            logs = {k: float(v) for k, v in self.results().items()}
            if self.val_data is not None:
                for metric in self.model.metrics:
                    metric.reset_state()
                for batch in self.val_data:
                    self.test_step(batch)
                logs.update({f"val_{k}": float(v) for k, v in self.results().items()})
            logs["epoch_seconds"] = time.perf_counter() - begin + seconds
            self.end_epoch(epoch, epochs, logs, backup)
            last_backup = time.monotonic()
            epoch, done, seconds = epoch + 1, 0, 0.0

    def end_epoch(self, epoch, epochs, logs, backup):
        """What fit's callbacks do at an epoch's end, in their order: history row, best.keras, backup,
        TensorBoard, progress line."""
        import tensorflow as tf

        path = self.folder / "history.csv"
        keys = ["epoch"] + sorted(logs)
        with open(path, "a") as f:
            if path.stat().st_size == 0:
                f.write(",".join(keys) + "\n")
            f.write(",".join([str(epoch)] + [repr(logs[k]) for k in keys[1:]]) + "\n")
        value = logs.get(self.monitor) if self.monitor else None
        if not self.monitor or (value is not None and (self.best is None or value < self.best)):
            self.model.save(self.folder / "best.keras")
            self.best = value
        backup.save(epoch + 1, 0, 0.0)
        for split, prefix in (("train", ""), ("validation", "val_")):
            with self.writers[split].as_default(step=epoch):
                for k, v in logs.items():
                    if k != "epoch_seconds" and k.startswith(prefix) and (prefix or not k.startswith("val_")):
                        tf.summary.scalar(f"epoch_{k[len(prefix):]}", v)
            self.writers[split].flush()
        shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items() if k != "epoch_seconds")
        print(f"Epoch {epoch + 1}/{epochs} - {logs['epoch_seconds']:.0f}s - {shown}", file=sys.stdout, flush=True)
