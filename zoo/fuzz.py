"""A randomised search for inputs that `Export.run` lets through and ONNX Runtime cannot take.

    python -m zoo.fuzz exports/ [--calls 2000] [--seed 0] [--record FILE]

Each call is a recipe (an input's dtype, shape and kind of values, or a missing, extra or non-array
input) built from the graph's manifest entry: degenerate and extreme sizes on every axis, every
numpy dtype, NaN, infinities and values out of range, with the others left valid. A child process
(a worker) builds the arrays and runs them through `Export.run`, so an abort of ONNX Runtime ends
the worker, not the search: it is recorded as a finding, and a new worker takes the next call.

Outcomes: "ok" (ran), "refused" (the runtime's one-line ValueError, before ONNX Runtime ran),
"onnxruntime" (ONNX Runtime raised: the runtime's checks let it through), "error" (any other
exception), "abort" (the worker died) and "hang" (no answer within the call's time limit). The
runtime is right when only the first two occur. Never imports TensorFlow.
"""

import argparse
import json
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
          "uint64", "bool", "complex64", "object", "<U1")
# sizes of a named axis: degenerate, small (runs in milliseconds) and past any memory limit
SMALL_SIZES = (0, 1, 2, 3, 5, 8, 13)
HUGE_SIZES = (2**31 - 1, 2**31, 2**40)
VALUE_KINDS = ("valid", "nan", "inf", "-inf", "max", "denormal", "below", "above", "int-min", "int-max")
MUTATIONS = ("none", "size", "huge-size", "fixed-axis", "dtype", "values", "rank", "missing", "extra",
             "not-array", "mismatch", "strides")


def graphs_of(export) -> list:
    """(graph, precision) pairs: every graph of the export and every variant of it."""
    return [(name, precision) for name, spec in export.manifest["graphs"].items()
            for precision in ("fp32", *spec.get("variants", {}))]


def recipe(spec_inputs: list, rng: np.random.Generator, mutations=MUTATIONS) -> dict:
    """One call's inputs as a recipe: {"inputs": {name: (dtype, shape, value kind) or ("not-array", what)},
    "mutation": what was made wrong}; a recipe holds no arrays (a huge shape costs nothing to send)."""
    mutation = str(rng.choice(mutations))
    named = sorted({d for s in spec_inputs for d in s["shape"] if isinstance(d, str)})
    sizes = {d: int(rng.choice(SMALL_SIZES[1:])) for d in named}
    if mutation == "size" and named:
        sizes[str(rng.choice(named))] = int(rng.choice(SMALL_SIZES))
    if mutation == "huge-size" and named:
        sizes[str(rng.choice(named))] = int(rng.choice(HUGE_SIZES))
    inputs = {}
    for s in spec_inputs:
        shape = [sizes[d] if isinstance(d, str) else d for d in s["shape"]]
        inputs[s["name"]] = [s["dtype"], shape, "valid"]
    victim = str(rng.choice([s["name"] for s in spec_inputs]))
    spec = next(s for s in spec_inputs if s["name"] == victim)
    entry = inputs[victim]
    if mutation == "fixed-axis":
        fixed = [i for i, d in enumerate(spec["shape"]) if isinstance(d, int)]
        if fixed:
            entry[1][int(rng.choice(fixed))] = int(rng.choice((0, 1, 2, 7, 2**31)))
    elif mutation == "dtype":
        entry[0] = str(rng.choice([d for d in DTYPES if d != spec["dtype"]]))
    elif mutation == "values":
        entry[2] = str(rng.choice(VALUE_KINDS[1:]))
    elif mutation == "rank":
        entry[1] = entry[1][:-1] if rng.random() < 0.5 else entry[1] + [int(rng.choice((1, 2)))]
    elif mutation == "missing":
        del inputs[victim]
    elif mutation == "extra":
        inputs[f"extra_{victim}"] = list(entry)
    elif mutation == "not-array":
        inputs[victim] = ["not-array", str(rng.choice(("list", "int", "none", "0-d", "string")))]
    elif mutation == "mismatch":
        axes = [i for i, d in enumerate(spec["shape"]) if isinstance(d, str)]
        if axes:
            entry[1][int(rng.choice(axes))] = int(rng.choice(SMALL_SIZES))
    elif mutation == "strides":
        entry[2] = "strided"
    return {"inputs": {k: tuple(v) for k, v in inputs.items()}, "mutation": mutation}


def build(entry, spec: dict, rng: np.random.Generator):
    """The value a recipe's entry stands for; huge shapes as read-only broadcast views (no memory)."""
    if entry[0] == "not-array":
        return {"list": [1, 2, 3], "int": 3, "none": None, "0-d": np.float32(1.0), "string": "abc"}[entry[1]]
    dtype, shape, kind = np.dtype(entry[0]), tuple(entry[1]), entry[2]
    count = int(np.prod(shape, dtype=object))
    if count > 1 << 24:
        return np.broadcast_to(np.asarray((spec or {}).get("range", [0])[0]).astype(dtype), shape)
    lo, hi = (spec or {}).get("range", (0, 2))
    if np.issubdtype(dtype, np.integer) or dtype == bool:
        value = rng.integers(lo, hi, shape).astype(dtype) if dtype != bool else rng.random(shape) < 0.5
    elif dtype.kind in "fc":
        low, high = (spec or {}).get("interval", (-1.0, 1.0))
        value = rng.uniform(low, high, shape).astype(dtype)
    elif dtype == object:
        value = np.empty(shape, object)
        value[...] = 1
    else:
        value = np.full(shape, "a", dtype)
    if value.size and kind not in ("valid", "strided"):
        index = tuple(rng.integers(0, n) for n in shape)
        if dtype.kind in "fc":
            info = np.finfo(dtype)
            special = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "max": info.max, "denormal": info.tiny / 2,
                       "below": (spec or {}).get("interval", (-1e30, 0))[0] - 1,
                       "above": (spec or {}).get("interval", (0, 1e30))[1] + 1,
                       "int-min": info.min, "int-max": info.max}[kind]
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            special = {"below": lo - 1, "above": hi, "int-min": info.min, "int-max": info.max}.get(kind, hi)
            special = int(np.clip(special, info.min, info.max))
        else:
            special = value[index]
        value[index] = special
    if kind == "strided" and value.ndim:
        value = np.repeat(value, 2, axis=-1)[..., ::2]  # the same values, not contiguous
    return value


def positions(inputs: dict, rng: np.random.Generator):
    """A cached decoder's valid position_ids for the shapes `inputs` have (docs/sampling.md: the decoder's
    contract): consecutive in each row, inside the cache; after cached ones only for one sequence."""
    ids = inputs["position_ids"]
    past = next((v for k, v in inputs.items() if k.startswith("past_key_values")), None)
    if not isinstance(past, np.ndarray) or ids.ndim != 2 or past.ndim != 4 or ids.size > 1 << 24:
        return ids
    (batch, length), capacity = ids.shape, past.shape[2]
    starts = rng.integers(0, max(1, capacity - length + 1), (batch, 1)) if length == 1 or batch == 1 else 0
    return (starts + np.arange(length)).astype(ids.dtype) + np.zeros(ids.shape, ids.dtype)


# --- The worker: runs recipes in a child process --------------------------------------------------

def _send(stream, obj):
    data = pickle.dumps(obj)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream):
    head = stream.read(8)
    if len(head) < 8:
        return None
    return pickle.loads(stream.read(struct.unpack("<Q", head)[0]))


def worker(memory_limit: int):
    """Reads (export folder, graph, precision, recipe, seed) from stdin, answers one JSON line each."""
    import resource

    from zoo.runtime import load

    # a runtime check that lets a huge call through must fail here, not take the machine's memory
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    exports = {}
    while True:
        job = _receive(sys.stdin.buffer)
        if job is None:
            return
        folder, graph, precision, case, seed = job
        if folder not in exports:
            exports[folder] = load(folder, verify=False)
        export = exports[folder]
        specs = {s["name"]: s for s in export.graph(graph)["inputs"]}
        rng = np.random.default_rng(seed)
        inputs = {k: build(v, specs.get(k.removeprefix("extra_")), rng) for k, v in case["inputs"].items()}
        if case["inputs"].get("position_ids", ("",))[-1] == "valid":
            inputs["position_ids"] = positions(inputs, rng)
        try:
            export.check_inputs(graph, inputs, precision)
        except ValueError as e:
            outcome, message = "refused", str(e)
        except Exception as e:  # noqa: BLE001 - a check that fails other than with ValueError is a finding
            outcome, message = "error", f"{type(e).__name__} in check_inputs: {e}"
        else:
            try:
                export.run(graph, inputs, check=False, precision=precision)
                outcome, message = "ok", ""
            except ValueError as e:  # Export.run's wrapping of ONNX Runtime's own errors
                outcome, message = "onnxruntime", str(e)
            except Exception as e:  # noqa: BLE001
                outcome, message = "error", f"{type(e).__name__}: {e}"
        sys.stdout.write(json.dumps({"outcome": outcome, "message": message.splitlines()[0] if message else "",
                                     "lines": len(message.splitlines())}) + "\n")
        sys.stdout.flush()


class Worker:
    """A worker subprocess; `call` returns its answer, or an abort / hang finding (then a new one starts)."""

    def __init__(self, memory_limit: int = 8 << 30):
        self.memory_limit, self.process = memory_limit, None

    def start(self):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.process = subprocess.Popen([sys.executable, "-m", "zoo.fuzz", "--worker", str(self.memory_limit)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=env, cwd=Path(__file__).resolve().parents[1])

    def call(self, job, timeout: float) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.start()
        try:
            _send(self.process.stdin, job)
        except BrokenPipeError:
            pass
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else b""
        if line:
            return json.loads(line)
        if not ready:
            self.stop()
            return {"outcome": "hang", "message": f"no answer in {timeout:g} s"}
        code = self.process.wait(timeout=10)
        err = self.process.stderr.read().decode(errors="replace").strip().splitlines()
        self.process = None
        return {"outcome": "abort", "message": f"exit {code}: {err[-1] if err else ''}"}

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def search(folders, calls: int, seed: int = 0, timeout: float = 60.0, on_result=None,
           memory_limit: int = 8 << 30, stop_after: int = None, mutations=MUTATIONS) -> list:
    """`calls` recipes spread over every graph (and variant) of every export in `folders`, each run by
    a worker (its address space capped at `memory_limit`: a call the runtime lets through that needs
    more fails there); returns one row per call: export, graph, precision, mutation, recipe, outcome,
    message. `stop_after`: end the search at that many findings (a test need not wait out every hang)."""
    from zoo.runtime import load

    targets = []
    for folder in folders:
        export = load(folder, verify=False)
        targets += [(str(folder), export.model, graph, precision, export.graph(graph)["inputs"])
                    for graph, precision in graphs_of(export)]
    rng, rows, runner = np.random.default_rng(seed), [], Worker(memory_limit)
    try:
        for i in range(calls):
            folder, model, graph, precision, spec_inputs = targets[i % len(targets)]
            case = recipe(spec_inputs, rng, mutations)
            answer = runner.call((folder, graph, precision, case, i), timeout)
            row = {"export": folder, "model": model, "graph": graph, "precision": precision,
                   "mutation": case["mutation"], "inputs": case["inputs"], **answer}
            rows.append(row)
            if on_result:
                on_result(row)
            if stop_after and sum(r["outcome"] not in ("ok", "refused") for r in rows) >= stop_after:
                break
    finally:
        runner.stop()
    return rows


def summary(rows) -> str:
    counts = Counter(r["outcome"] for r in rows)
    lines = [f"{len(rows)} calls: " + ", ".join(f"{n} {k}" for k, n in counts.most_common())]
    for r in rows:
        if r["outcome"] not in ("ok", "refused"):
            lines.append(f"  {r['outcome']}: {r['model']} {r['graph']} {r['precision']} {r['mutation']} "
                         f"{json.dumps(r['inputs'])}: {r['message']}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m zoo.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", help="export folders, or a folder of them (exports/)")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one call may take")
    parser.add_argument("--record", help="append a JSON line per call to this file")
    parser.add_argument("--memory-limit", type=int, default=8 << 30, help="a worker's address space, bytes")
    parser.add_argument("--mutations", default=",".join(MUTATIONS), help="the kinds of mistake to make")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    folders = []
    for f in map(Path, args.folders):
        folders += [f] if (f / "manifest.json").is_file() else sorted(p.parent for p in f.glob("*/manifest.json"))
    if not folders:
        parser.error("no export folder (with a manifest.json) given")
    start = time.monotonic()
    record = open(args.record, "a") if args.record else None

    def on_result(row):
        if record:
            record.write(json.dumps(row) + "\n")

    mutations = args.mutations.split(",")
    unknown = sorted(set(mutations) - set(MUTATIONS))
    if unknown:
        parser.error(f"unknown mutations {unknown}; known: {', '.join(MUTATIONS)}")
    rows = search(folders, args.calls, args.seed, args.timeout, on_result, args.memory_limit, mutations=mutations)
    print(summary(rows))
    print(f"{time.monotonic() - start:.0f} s")
    return 0 if all(r["outcome"] in ("ok", "refused") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
