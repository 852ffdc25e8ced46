"""An export folder: manifest, checksums, ONNX Runtime sessions with checked inputs."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np


class ExportFileError(Exception):
    """A file of the export is missing, unreadable or does not match its manifest checksum."""


class ExportFormatError(ExportFileError):
    """The export was written by a zoo whose manifest this runtime cannot read."""


# The memory one call's inputs, outputs and largest intermediate tensor may take, so that no request
# makes ONNX Runtime allocate without bound (1 GiB: the gan generator at a batch of about 20,000);
# load(..., max_call_bytes=N) or $ZOO_MAX_CALL_BYTES changes it.
MAX_CALL_BYTES = 1 << 30
FORMAT = "zoo-export/1"  # manifest.json's "format", written by zoo.export
# What this runtime's sampler of each kind reads from the manifest's "runtime" info (an export
# written before a sampler needed a key lacks it: Export refuses it, saying so, at load).
RUNTIME_KEYS = {
    "text-recurrent": ("graph", "vocabulary", "state"),
    "text-cached": ("graph", "vocabulary", "max_context", "num_layers", "num_heads", "head_dim", "past", "present",
                    "cache"),
    "image-generator": ("graph", "output", "latent_dim", "conditional", "num_classes", "output_range"),
    "image-autoregressive": ("graph", "output", "height", "width", "rows_above", "conditional", "num_classes"),
    "image-diffusion": ("graph", "output", "output_range", "schedule", "conditional", "null_label", "height", "width",
                        "num_classes"),
    "audio-generator": ("step_graph", "prior_graph", "condition_graph", "dilations", "residual_channels",
                        "condition_channels", "num_classes", "sample_rate", "max_frames", "prior_state",
                        "sample_defaults"),
}
# ... and the values it can run, where a key names a layout (a text-cached decoder's cache is written in
# place; the concatenating decoder of exports made before 2026-12-03 has no "cache" key).
RUNTIME_VALUES = {
    "text-cached": {"cache": ("in-place",)},
}


def format_problem(manifest: dict):
    """Why this runtime cannot sample the export of `manifest` (its format, or runtime info keys its
    kind's sampler reads and it lacks), or None."""
    if manifest.get("format") != FORMAT:
        return f"its format is {manifest.get('format')!r}, this runtime reads {FORMAT!r}"
    info = manifest.get("runtime") or {}
    missing = [k for k in RUNTIME_KEYS.get(info.get("kind"), ()) if k not in info]
    if missing:
        return (f"its runtime info lacks {', '.join(map(repr, missing))}, which this runtime's {info['kind']} "
                "sampler reads")
    for key, known in RUNTIME_VALUES.get(info.get("kind"), {}).items():
        if info.get(key) not in known:
            return (f"its runtime info's {key} is {info.get(key)!r}, this runtime's {info['kind']} sampler runs "
                    f"{' or '.join(map(repr, known))}")
    return None


# The x86-64 CPU flags that decide which of ONNX Runtime's int8 kernels run: without a VNNI flag its
# u8s8 kernels sum pairs of products in int16 (VPMADDUBSW), which can saturate; with one, in int32.
INT8_CPU_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_features(cpuinfo: str = None) -> dict:
    """{"cpu": model name, "flags": the INT8_CPU_FLAGS this CPU has} from /proc/cpuinfo (Linux; elsewhere
    the processor's name and no flags), as an export records where its int8 figures were measured."""
    import platform

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    name, flags = platform.processor() or platform.machine(), set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            name = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return {"cpu": name, "flags": [f for f in INT8_CPU_FLAGS if f in flags]}


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_providers():
    """CUDA when onnxruntime-gpu sees a GPU, then CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class Export:
    """An `exports/<model>/` folder. `verify=True` checks every file against manifest.json."""

    def __init__(self, path, verify: bool = True, providers=None, max_call_bytes: int = None, threads: int = 0):
        self.path = Path(path)
        self.threads = threads  # each session's intra-op threads (0: ONNX Runtime's default, one per core)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            raise ExportFileError(f"{manifest_path} not found: is {self.path} a zoo export folder?")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise ExportFileError(f"{manifest_path} is not valid JSON: {e}") from None
        problem = format_problem(self.manifest)
        if problem:
            raise ExportFormatError(
                f"{self.path} was written by another version of zoo ({self.manifest.get('created', 'date unknown')}): "
                f"{problem}. Export it again with this version (python -m zoo export "
                f"{self.manifest.get('model', '<model>')} <run dir>), or sample it with the zoo that wrote it.")
        if verify:
            self.verify()
        self.providers = providers or default_providers()
        # one call's inputs, outputs and largest intermediate, at most (check_call refuses more beforehand)
        self.max_call_bytes = call_limit(max_call_bytes)
        self._sessions = {}

    @property
    def model(self) -> str:
        return self.manifest["model"]

    @property
    def runtime(self) -> dict:
        return self.manifest["runtime"]

    def verify(self):
        for rel, info in self.manifest.get("files", {}).items():
            path = self.path / rel
            if not path.is_file():
                raise ExportFileError(f"{path} is listed in manifest.json but missing")
            if path.stat().st_size != info["bytes"] or sha256_file(path) != info["sha256"]:
                raise ExportFileError(f"{path} does not match its sha256 in manifest.json (corrupt or modified)")

    def graph(self, name: str) -> dict:
        graphs = self.manifest["graphs"]
        if name not in graphs:
            raise KeyError(f"no graph {name!r} in {self.path}; graphs: {', '.join(graphs)}")
        return graphs[name]

    def graph_file(self, name: str, precision: str = "fp32") -> str:
        """The ONNX file of graph `name` at `precision`: fp32 (the graph itself) or a variant the
        manifest lists under the graph's `variants` (e.g. int8: `step.int8.onnx`)."""
        graph = self.graph(name)
        if precision == "fp32":
            return graph["onnx"]
        variants = graph.get("variants", {})
        if precision not in variants:
            have = ", ".join(["fp32", *variants])
            raise ValueError(f"graph {name!r} of {self.path} has no {precision} variant (it has: {have})")
        return variants[precision]["onnx"]

    def session(self, name: str, threads: int = None, precision: str = "fp32"):
        """The ONNX Runtime session of graph `name`; `threads` > 0 caps its intra-op threads
        (one thread runs a tiny per-sample step faster than two that must synchronise; None: the
        export's `threads`, e.g. a server replica's share of the cores); `precision`
        "int8" runs the graph's int8 variant where the manifest lists one."""
        if not isinstance(precision, str):
            raise ValueError(f"precision must be a string such as 'fp32' or 'int8', got {precision!r}")
        threads = self.threads if threads is None else threads
        key = (name, threads, precision)
        if key not in self._sessions:
            import onnxruntime as ort

            path = self.path / self.graph_file(name, precision)
            if not path.is_file():
                raise ExportFileError(f"{path} not found")
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self._sessions[key] = ort.InferenceSession(str(path), options, providers=self.providers)
        return self._sessions[key]

    def check_inputs(self, name: str, inputs: dict, precision: str = "fp32"):
        """`inputs` against the manifest, before ONNX Runtime sees them: names, numpy arrays of the
        graph's dtypes and ranks, fixed and named dimensions (a named one, such as "batch", has one size
        of at least 1 across the inputs), the memory the call needs (`check_call`), values (finite; integer ranges and float intervals the manifest declares)
        and the rules of the graph that the manifest's shapes cannot say (a cached decoder's
        positions). Anything else is a ValueError naming the input."""
        specs = {spec["name"]: spec for spec in self.graph(name)["inputs"]}
        missing, extra = set(specs) - set(inputs), set(inputs) - set(specs)
        if missing or extra:
            raise ValueError(f"graph {name!r} takes inputs {sorted(specs)}; missing {sorted(missing)}, "
                             f"unexpected {sorted(extra)}")
        for key, spec in specs.items():
            value = inputs[key]
            if not isinstance(value, np.ndarray):
                raise ValueError(f"input {key!r} must be a numpy array, got {type(value).__name__}")
            if value.dtype != np.dtype(spec["dtype"]):
                raise ValueError(f"input {key!r} must have dtype {spec['dtype']}, got {value.dtype}")
            if value.ndim != len(spec["shape"]):
                raise ValueError(f"input {key!r} must have rank {len(spec['shape'])} "
                                 f"(shape {spec['shape']}), got shape {value.shape}")
        sizes = {}  # a named dimension ("batch") has one size across the inputs
        for key, spec in specs.items():
            value = inputs[key]
            for axis, (want, got) in enumerate(zip(spec["shape"], value.shape)):
                if isinstance(want, int) and want > 0 and want != got:
                    raise ValueError(f"input {key!r} axis {axis} must be {want}, got shape {value.shape}")
                if isinstance(want, str):
                    if got < 1:  # no graph here computes anything on an empty axis; some kernels fail on it
                        raise ValueError(f"input {key!r} axis {axis} ({want}) must be at least 1, "
                                         f"got shape {value.shape}")
                    first = sizes.setdefault(want, (got, key))
                    if first[0] != got:
                        raise ValueError(f"input {key!r} has {want} {got} but {first[1]!r} has {first[0]} "
                                         f"(shapes {value.shape} and {inputs[first[1]].shape})")
        self.check_call(name, {k: v[0] for k, v in sizes.items()})
        for key, spec in specs.items():
            value = inputs[key]
            if "range" in spec and value.size:
                lo, hi = spec["range"]
                if value.min() < lo or value.max() >= hi:
                    raise ValueError(f"input {key!r} of graph {name!r} takes values {lo}..{hi - 1}, "
                                     f"got values from {value.min()} to {value.max()}")
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                raise ValueError(f"input {key!r} of graph {name!r} holds NaN or infinite values")
            if "interval" in spec and value.size:
                lo, hi = spec["interval"]
                if value.min() < lo or value.max() > hi:
                    raise ValueError(f"input {key!r} of graph {name!r} takes values in [{lo:g}, {hi:g}], "
                                     f"got values from {value.min():g} to {value.max():g}")
        if self.runtime.get("kind") == "text-cached" and name == self.runtime["graph"]:
            check_cached_positions(inputs, self.runtime, contrib=precision != "standard")

    def check_call(self, name: str, sizes: dict):
        """Refuses a call of graph `name` at `sizes` (its named dimensions: {"batch": 64, ...}) whose
        inputs and outputs, with the largest tensor ONNX Runtime computes between them (the manifest's
        `intermediates`), would take more than `max_call_bytes`: a ValueError before anything is
        allocated. The samplers ask it before they make their arrays."""
        graph = self.graph(name)
        need = {}
        for spec in graph["inputs"] + graph["outputs"]:
            shape = [sizes.get(d, 1) if isinstance(d, str) else d for d in spec["shape"]]
            need[repr(spec["name"]) + f" {shape}"] = np.dtype(spec["dtype"]).itemsize * int(np.prod(shape, dtype=object))
        inner = []
        for spec in graph.get("intermediates", []):
            shape = [dimension(d, sizes) for d in spec["shape"]]
            inner.append((spec["bytes"] * int(np.prod(shape, dtype=object)), shape))
        if inner:  # the largest one stands for them all
            most, shape = max(inner, key=lambda e: e[0])
            need[f"an intermediate {shape}"] = most
        total = sum(need.values())
        if total > self.max_call_bytes:
            largest = max(need, key=need.get)
            raise ValueError(f"graph {name!r} at {', '.join(f'{k} {v}' for k, v in sizes.items())} needs "
                             f"{_bytes(total)} ({largest}: {_bytes(need[largest])}), over this runtime's limit of "
                             f"{_bytes(self.max_call_bytes)} a call (load(..., max_call_bytes=N) changes it)")

    def run(self, name: str, inputs: dict, check: bool = True, precision: str = "fp32") -> dict:
        """Run graph `name`; returns {output name: array}. Inputs the graph cannot take are a
        ValueError naming them, checked before ONNX Runtime runs (`check_inputs`); an error ONNX
        Runtime raises all the same comes back as a one-line ValueError too."""
        if check:
            self.check_inputs(name, inputs, precision)
        session = self.session(name, precision=precision)
        names = [o.name for o in session.get_outputs()]
        try:
            return dict(zip(names, session.run(names, inputs)))
        except Exception as e:  # onnxruntime's own error classes (Fail, InvalidArgument, ...)
            if type(e).__module__.split(".")[0] != "onnxruntime":
                raise
            shapes = ", ".join(f"{k} {np.asarray(v).dtype}{list(np.shape(v))}" for k, v in inputs.items())
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"graph {name!r} of {self.path} could not run on {shapes}: {first}") from None


def dimension(d, sizes: dict) -> int:
    """A dimension of the manifest's `intermediates`: a size, or an expression of named dimensions
    ("batch*frames + 6") evaluated at `sizes` (+, -, * and // of names and integers, nothing else)."""
    import ast

    if isinstance(d, int):
        return d
    ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.FloorDiv: lambda a, b: a // b}

    def value(node):
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            return sizes.get(node.id, 1)
        raise ValueError(f"the manifest's intermediate dimension {d!r} is not an expression this runtime reads")

    return max(0, value(ast.parse(d, mode="eval").body))


def _bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def check_cached_positions(inputs: dict, info: dict, contrib: bool = True):
    """A cached decoder's positions (docs/sampling.md: the decoder's contract): each one inside the cache
    (0 <= position < capacity <= max_context) and, for the GroupQueryAttention graphs (`contrib`), each
    row's positions consecutive, and a call adding several positions after cached ones one sequence."""
    positions = inputs["position_ids"]
    past = next(k for k in inputs if k.startswith("past_key_values"))
    capacity = inputs[past].shape[2]
    if capacity > info["max_context"]:
        raise ValueError(f"input {past!r} holds {capacity} positions, more than the model's context of "
                         f"{info['max_context']}")
    if positions.max() >= capacity:
        raise ValueError(f"input 'position_ids' goes up to {positions.max()}, past the cache's capacity of "
                         f"{capacity} positions (axis 2 of the past_key_values)")
    if not contrib:
        return
    if positions.shape[1] > 1 and not (np.diff(positions, axis=1) == 1).all():
        raise ValueError("input 'position_ids' must run on by one in each row (p, p + 1, ...), got "
                         f"{positions[(np.diff(positions, axis=1) != 1).any(axis=1)][0].tolist()}")
    if positions.shape[1] > 1 and positions.shape[0] > 1 and positions[:, 0].max() > 0:
        raise ValueError("a call that adds several positions after cached ones takes one sequence, got "
                         f"{positions.shape[0]} (position_ids from {positions[:, 0].max()}): run them one by one")


class Progress:
    """`label: 37% (370/1000), 12 s` on one line of stderr, rewritten at most twice a second, for
    loops that can run longer than about ten seconds. Silent when stderr is not a terminal (logs,
    CI, tests) or ZOO_PROGRESS=0."""

    def __init__(self, total: int, label: str, stream=None):
        import os
        import sys
        import time

        self.total, self.label, self.done = max(1, int(total)), label, 0
        self.stream = stream or sys.stderr
        self.shown = (stream is not None or self.stream.isatty()) and os.environ.get("ZOO_PROGRESS") != "0"
        self._clock = time.monotonic
        self._start = self._last = self._clock()

    def update(self, n: int = 1):
        self.done += n
        now = self._clock()
        if self.shown and (now - self._last >= 0.5 or self.done >= self.total):
            self._last = now
            self.stream.write(f"\r{self.label}: {100 * self.done // self.total}% ({self.done}/{self.total}), "
                              f"{now - self._start:.0f} s ")
            self.stream.flush()

    def close(self):
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def call_limit(max_call_bytes=None) -> int:
    """One call's memory limit: `max_call_bytes`, else $ZOO_MAX_CALL_BYTES, else MAX_CALL_BYTES; a one-line
    ValueError for anything but a whole number of bytes of at least 1."""
    if max_call_bytes is not None:
        return check_count("max_call_bytes", max_call_bytes, 1)
    text = os.environ.get("ZOO_MAX_CALL_BYTES", "").strip()
    if not text:
        return MAX_CALL_BYTES
    try:
        return check_count("$ZOO_MAX_CALL_BYTES", int(text), 1)
    except ValueError:
        raise ValueError(f"$ZOO_MAX_CALL_BYTES must be a whole number of bytes of at least 1 (e.g. 1073741824), "
                         f"got {text!r}") from None


def load(path, verify: bool = True, providers=None, max_call_bytes: int = None, threads: int = 0) -> Export:
    return Export(path, verify=verify, providers=providers, max_call_bytes=max_call_bytes, threads=threads)


def check_count(name: str, value, minimum: int = 0, maximum: int = None) -> int:
    """`value` as an int: a whole number (Python's or numpy's, not a bool) from `minimum` to
    `maximum`, else a one-line ValueError naming the argument."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def check_number(name: str, value, minimum: float = None, maximum: float = None) -> float:
    """`value` as a float: a finite real number (not a bool) from `minimum` to `maximum`, else a
    one-line ValueError naming the argument."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not np.isfinite(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bound = " ".join(filter(None, (f">= {minimum:g}" if minimum is not None else "",
                                       f"<= {maximum:g}" if maximum is not None else "")))
        raise ValueError(f"{name} must be a finite number{' ' + bound if bound else ''}, got {value}")
    return float(value)


def parse_classes(values, num_classes: int, what: str = "labels") -> np.ndarray:
    """"3,1,4" or a sequence -> int32 array, each checked against the number of classes."""
    if isinstance(values, str):
        try:
            values = [int(p) for p in values.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"{what} must be integers separated by commas, got {values!r}") from None
    try:
        values = np.asarray(values, dtype=object).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a sequence of integers, got {type(values).__name__}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values):
        raise ValueError(f"{what} must be integers in 0..{num_classes - 1}, got {values.tolist()[:10]}")
    if values.size == 0 or min(values) < 0 or max(values) >= num_classes:
        raise ValueError(f"{what} must be in 0..{num_classes - 1}, got {values.tolist()[:10]}"
                         f"{' ...' if values.size > 10 else ''}")
    return values.astype(np.int32)


def sample_logits(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> np.ndarray:
    """One id per row of `logits` [B, V]: softmax at `temperature` over the `top_k` best (0 = all).

    temperature 0 means greedy (argmax).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if temperature == 0:
        return np.asarray(logits).argmax(axis=-1)
    logits = np.asarray(logits, dtype=np.float64)
    z = logits / temperature
    if 0 < top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    cdf = np.cumsum(p, axis=-1)
    u = rng.random((z.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf < u).sum(axis=-1), z.shape[-1] - 1)
