"""An export folder: manifest, checksums, ONNX Runtime sessions with checked inputs."""

import hashlib
import json
from pathlib import Path

import numpy as np


class ExportFileError(Exception):
    """A file of the export is missing, unreadable or does not match its manifest checksum."""


class ExportFormatError(ExportFileError):
    """The export was written by a zoo whose manifest this runtime cannot read."""


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

    def __init__(self, path, verify: bool = True, providers=None):
        self.path = Path(path)
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

    def session(self, name: str, threads: int = 0, precision: str = "fp32"):
        """The ONNX Runtime session of graph `name`; `threads` > 0 caps its intra-op threads
        (one thread runs a tiny per-sample step faster than two that must synchronise); `precision`
        "int8" runs the graph's int8 variant where the manifest lists one."""
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

    def check_inputs(self, name: str, inputs: dict):
        """Names, dtypes, ranks and fixed dimensions of `inputs` against the manifest."""
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
                    first = sizes.setdefault(want, (got, key))
                    if first[0] != got:
                        raise ValueError(f"input {key!r} has {want} {got} but {first[1]!r} has {first[0]} "
                                         f"(shapes {value.shape} and {inputs[first[1]].shape})")
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

    def run(self, name: str, inputs: dict, check: bool = True, precision: str = "fp32") -> dict:
        """Run graph `name`; returns {output name: array}. Inputs the graph cannot take are a
        ValueError naming them (checked against the manifest first; what only the graph knows, such as
        a position past the model's context, comes back from ONNX Runtime the same way)."""
        if check:
            self.check_inputs(name, inputs)
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


def load(path, verify: bool = True, providers=None) -> Export:
    return Export(path, verify=verify, providers=providers)


def parse_classes(values, num_classes: int, what: str = "labels") -> np.ndarray:
    """"3,1,4" or a sequence -> int32 array, each checked against the number of classes."""
    if isinstance(values, str):
        try:
            values = [int(p) for p in values.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"{what} must be integers separated by commas, got {values!r}") from None
    values = np.asarray(values, np.int32).reshape(-1)
    if values.size == 0 or values.min() < 0 or values.max() >= num_classes:
        raise ValueError(f"{what} must be in 0..{num_classes - 1}, got {values.tolist()}")
    return values


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
