"""Character text generation in numpy around an exported step graph.

- `text-recurrent` exports (rnn, lstm): a step graph carrying the recurrent state.
- `text-cached` exports (transformer): a decoder graph carrying a key/value cache; a prompt is
  prefilled in one call, then each new character is one call with the cache.
"""

import contextlib
import functools
import threading
import weakref

import numpy as np

from zoo.runtime.core import Export, ExportFormatError, check_count, check_number, format_problem, sample_logits


def encode(text: str, vocabulary: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(vocabulary)}
    unknown = sorted({c for c in text if c not in index})
    if unknown:
        raise ValueError(f"characters not in the model's vocabulary: {unknown!r}; "
                         f"the vocabulary is {vocabulary!r}")
    return np.array([index[c] for c in text], dtype=np.int32)


def sample_text(export: Export, prompt: str = "ROMEO:", length: int = 400, temperature: float = 0.8,
                top_k: int = 0, seed: int = 0, batch: int = 1, on_full: str = "slide", precision: str = "fp32") -> list:
    """`batch` continuations of `prompt`, `length` characters each (prompt included in the result).

    `on_full` (models with a maximum context): "slide" keeps generating by re-reading the last
    half of the context when it fills; "refuse" raises ValueError if prompt + length exceed it.
    `precision`: "fp32" (default, the graph itself), or a variant the export has (manifest: the graph's
    `variants`): "int8", or "standard" (the transformer's decoder in ONNX's standard ops only, fp32).
    """
    rows = []  # made from the first characters: stream_text checks the arguments before any are made
    for chars in stream_text(export, prompt, length, temperature, top_k, seed, batch, on_full, precision):
        rows = rows or [[prompt] for _ in chars]
        for row, c in zip(rows, chars):
            row.append(c)
    return ["".join(row) for row in rows] or [prompt] * batch


def stream_text(export: Export, prompt: str = "ROMEO:", length: int = 400, temperature: float = 0.8,
                top_k: int = 0, seed: int = 0, batch: int = 1, on_full: str = "slide", precision: str = "fp32"):
    """sample_text one step at a time: an iterator of `length` lists, each the next character of every
    one of the `batch` texts, made when it is asked for (a server streams them as they come; closing the
    iterator ends the generation and frees its decoder). The request is checked here, before the first
    step: a bad one raises ValueError at once."""
    kind = export.runtime.get("kind")
    if kind not in ("text-recurrent", "text-cached"):
        raise ValueError(f"{export.path} holds a {kind!r} model, not a text model")
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"the prompt must be a string of at least one character, got {prompt!r}")
    length, batch = check_count("length", length), check_count("batch", batch, 1)
    temperature, top_k = check_number("temperature", temperature, 0), check_count("top_k", top_k)
    seed = check_count("seed", seed)
    check_text_call(export, len(prompt), length, batch)
    vocabulary = export.runtime["vocabulary"]
    prompt_ids = encode(prompt, vocabulary)
    if kind == "text-cached":
        if on_full not in ("slide", "refuse"):
            raise ValueError(f"on_full must be 'slide' or 'refuse', got {on_full!r}")
        limit = export.runtime["max_context"]
        if on_full == "refuse" and len(prompt_ids) + length > limit:
            raise ValueError(f"prompt ({len(prompt_ids)}) + length ({length}) exceed the model's context of "
                             f"{limit} characters; shorten them or use on_full='slide'")
        ids = _cached_ids(export, prompt_ids, length, temperature, top_k, seed, batch, precision)
    else:
        ids = _recurrent_ids(export, prompt_ids, length, temperature, top_k, seed, batch, precision)
    return ([vocabulary[j] for j in step] for step in ids)


def _recurrent_ids(export, prompt_ids, length, temperature, top_k, seed, batch, precision):
    """Each step's sampled ids [batch] from a `text-recurrent` export's step graph."""
    info = export.runtime
    graph = info["graph"]
    specs = {s["name"]: s for s in export.graph(graph)["inputs"]}
    feed = {name: np.zeros((batch, specs[name]["shape"][1]), np.float32) for name in info["state"]}
    feed["tokens"] = np.tile(prompt_ids, (batch, 1))
    out = export.run(graph, feed, precision=precision)  # the whole prompt in one call, then one character a step
    session = export.session(graph, precision=precision)
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(seed)
    for i in range(length):
        ids = sample_logits(out["logits"][:, -1], temperature, top_k, rng).astype(np.int32)
        yield ids
        if i + 1 == length:
            break
        feed = {name: out[next_name] for name, next_name in info["state"].items()}
        feed["tokens"] = ids[:, None]
        out = dict(zip(names, session.run(names, feed)))


def check_text_call(export: Export, prompt_length: int, length: int, batch: int):
    """Refuses a generation whose calls (the prompt's, in one call) or whose text would take more than
    the export's `max_call_bytes`, before anything is allocated."""
    info = export.runtime
    if info["kind"] == "text-cached":
        export.check_call(info["graph"], {"batch": batch, "sequence": min(prompt_length, info["max_context"]),
                                          "capacity": info["max_context"]})
    else:
        export.check_call(info["graph"], {"batch": batch, "time": prompt_length})
    if 8 * batch * (prompt_length + length) > export.max_call_bytes:  # the ids it keeps, int64
        raise ValueError(f"{batch} x {prompt_length + length} characters need more than this runtime's limit of "
                         f"{export.max_call_bytes} bytes a call: ask for fewer or shorter texts")


def cache_names(info: dict, which: str = "past") -> list:
    """A `text-cached` export's cache inputs (`which="past"`) or outputs ("present"), named from its
    manifest's runtime info: layer by layer, the key before the value."""
    return [info[which].format(i=i, kind=kind) for i in range(info["num_layers"]) for kind in ("key", "value")]


def _cached_ids(export, prompt_ids, length, temperature, top_k, seed, batch, precision):
    """Each step's sampled ids [batch] from a `text-cached` export's decoder: the prompt prefilled in
    one call, then a character a call; when the cache is full, the last half of the context is re-read."""
    limit = export.runtime["max_context"]
    history = np.zeros((batch, len(prompt_ids) + length), np.int64)
    history[:, : len(prompt_ids)] = prompt_ids
    filled = min(len(prompt_ids), limit)
    rng = np.random.default_rng(seed)
    with kept_decoder(export, batch, precision) as decoder:
        logits = decoder.prefill(history[:, len(prompt_ids) - filled : len(prompt_ids)])
        for i in range(len(prompt_ids), len(prompt_ids) + length):
            history[:, i] = sample_logits(logits, temperature, top_k, rng)
            yield history[:, i]
            if i + 1 == history.shape[1]:
                break
            if decoder.cached == limit:  # the cache is full: re-read the last half of the context
                logits = decoder.prefill(history[:, i + 1 - limit // 2 : i + 1])
            else:
                logits = decoder.step(history[:, i])


KEPT_DECODERS = 2  # idle decoders an export keeps for later calls
KEPT_BYTES = 64 << 20  # and their cache buffers' bytes at most (the shipped model's: 3.9 MB per sequence, 5 capacities)
_kept, _kept_lock = weakref.WeakKeyDictionary(), threading.Lock()  # Export -> its idle decoders, newest last


@contextlib.contextmanager
def kept_decoder(export, batch: int, precision: str = "fp32"):
    """A CachedDecoder of `export` for `batch` sequences at `precision`: an idle one kept from an
    earlier call (with its cache buffers and bindings), else a new one; kept again afterwards, up to
    KEPT_DECODERS per export and KEPT_BYTES of cache buffers, the least recently used dropped first
    (a decoder larger than KEPT_BYTES is not kept). A decoder serves one caller at a time, so calls
    from several threads each get their own."""
    with _kept_lock:
        idle = _kept.setdefault(export, [])
        decoder = next((d for d in reversed(idle) if (d.batch, d.precision) == (batch, precision)), None)
        if decoder is not None:
            idle.remove(decoder)
    if decoder is None:
        decoder = CachedDecoder(export, batch, precision)
    try:
        yield decoder
    finally:
        with _kept_lock:
            idle.append(decoder)
            del idle[:-KEPT_DECODERS]
            while idle and sum(d.nbytes for d in idle) > KEPT_BYTES:
                del idle[0]


def release_decoders(export):
    """Drops the idle decoders `export` keeps (their cache buffers and bindings)."""
    with _kept_lock:
        _kept.pop(export, None)


CACHE_STEP = 64  # on the CPU a decoder's cache capacity grows by this many positions (see CachedDecoder)


def cpu_capacity(positions: int, limit: int = None) -> int:
    """The capacity a CachedDecoder on the CPU holds `positions` cached positions in: the next
    multiple of CACHE_STEP, at most `limit` (the model's max_context)."""
    capacity = -(-positions // CACHE_STEP) * CACHE_STEP
    return capacity if limit is None else min(capacity, limit)


class CachedDecoder:
    """A `text-cached` export's decoder graph run with its key/value cache in place.

    The graph's cache has a fixed capacity and a call writes its new positions' keys and values at
    `position_ids` (its manifest's runtime info says `"cache": "in-place"`), so each cache tensor is
    a zeroed buffer of [batch, heads, capacity, head_dim] bound as both the past input and the
    present output: a step binds, allocates and copies nothing but one id and one position per
    sequence into numpy buffers bound by pointer, and its logits come back in another.

    The graph reads only the cached positions, so a step costs the same at any capacity; on the
    CPU the cache is held at capacities CACHE_STEP, 2 x CACHE_STEP, ... up to max_context so that
    a short generation of many sequences holds only the memory it reaches, each set of buffers with
    its bindings made on first use and kept: when the cache outgrows one, it is copied once into
    the next. Under CUDA it is one set of max_context positions in the GPU's memory.
    `prefill(ids)` starts from position 0 (what an earlier sequence left in the cache lies past the
    new positions, which are read only up to themselves); `step(ids)` appends one token per
    sequence. Both run on all of ONNX Runtime's threads: on 2 cores, two threads ran the fp32
    decoding loop 1.11-1.19x faster than one at 1, 2 and 4 sequences, the 8-bit int8 graph of
    2026-12-03 1.00-1.04x (benchmarks/decoder_threads.py, record benchmarks/compare-transformer-gqa.md)."""

    def __init__(self, export, batch: int, precision: str = "fp32"):
        info = export.runtime
        problem = format_problem(export.manifest)  # checked at load too; the manifest may have changed since
        if problem:
            raise ExportFormatError(f"{export.path}: {problem}; export it again "
                                    f"(python -m zoo export {export.manifest.get('model')} <run dir>)")
        graph = info["graph"]
        self.batch, self.precision, self.limit, self.cached = batch, precision, info["max_context"], 0
        self._heads, self._head_dim, self._vocab = info["num_heads"], info["head_dim"], len(info["vocabulary"])
        self._past, self._present = cache_names(info, "past"), cache_names(info, "present")
        session = export.session(graph, precision=precision)
        self._sessions = {"prefill": session, "step": session}  # each with its own bindings
        self._device = "cuda" if "CUDAExecutionProvider" in self._sessions["step"].get_providers() else "cpu"
        self._levels = {}  # capacity -> _CacheLevel, made on first use
        self._level = None  # the one holding the cache now
        self._ids, self._positions = np.zeros(batch * self.limit, np.int64), np.zeros(batch * self.limit, np.int64)
        self._logits = np.zeros(batch * self.limit * self._vocab, np.float32)
        # what a step writes and reads: one id and one position per sequence, its logits
        self._step_ids, self._step_positions = self._ids[:batch], self._positions[:batch]
        self._step_logits = self._logits[: batch * self._vocab].reshape(batch, self._vocab)

    @property
    def nbytes(self) -> int:
        """The bytes of its cache buffers (all capacities made so far)."""
        return sum(level.nbytes for level in self._levels.values())

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        """ids [batch, n], n <= max_context, from position 0 -> last logits [batch, V]."""
        batch, new = ids.shape
        if batch != self.batch:
            raise ValueError(f"this decoder holds the cache of {self.batch} sequences, got ids of {batch}")
        if not 0 < new <= self.limit:
            raise ValueError(f"a prefill takes 1 to {self.limit} positions (the model's context), got {new}")
        n = batch * new
        self._ids[:n] = ids.ravel()
        self._positions[:n] = np.tile(np.arange(new), batch)
        self._level = self._at_least(new)
        self._level.run("prefill", new)
        self.cached = new
        return self._logits[: n * self._vocab].reshape(batch, new, self._vocab)[:, -1]

    def step(self, ids: np.ndarray) -> np.ndarray:
        """ids [batch], one new token per sequence after the cached ones -> its logits [batch, V]."""
        if ids.shape != (self.batch,):
            raise ValueError(f"this decoder holds the cache of {self.batch} sequences, a step takes ids of shape "
                             f"({self.batch},), got {ids.shape}")
        if self._level is None or self.cached == self._level.capacity:  # nothing cached yet, or the cache is full
            if self.cached == self.limit:
                raise ValueError(f"{self.cached} cached + 1 new positions exceed the model's context of {self.limit}")
            grown = self._at_least(self.cached + 1)
            if self._level is not None:
                grown.take(self._level, self.cached)
            self._level = grown
        self._step_ids[:] = ids
        self._step_positions[:] = self.cached
        self._level.run("step", 1)
        self.cached += 1
        return self._step_logits

    def _at_least(self, positions: int) -> "_CacheLevel":
        capacity = cpu_capacity(positions, self.limit) if self._device == "cpu" else self.limit
        if capacity not in self._levels:
            self._levels[capacity] = _CacheLevel(self, capacity)
        return self._levels[capacity]


class _CacheLevel:
    """A CachedDecoder's cache buffers of one capacity, with a binding of each of its sessions to them."""

    def __init__(self, decoder: CachedDecoder, capacity: int):
        import onnxruntime as ort

        self.decoder, self.capacity = decoder, capacity
        shape = (decoder.batch, decoder._heads, capacity, decoder._head_dim)
        if decoder._device == "cpu":  # numpy's memory, ONNX Runtime's view of it: take() copies in numpy
            self.arrays = [np.zeros(shape, np.float32) for _ in decoder._past]
            self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self.arrays]
        else:
            self.arrays, self.values = None, []
            for _ in decoder._past:
                value = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, decoder._device, 0)
                value.update_inplace(np.zeros(shape, np.float32))
                self.values.append(value)
        self.nbytes = len(self.values) * int(np.prod(shape)) * 4
        self._bindings, self._runs, self._shapes = {}, {}, {}
        for kind, session in decoder._sessions.items():
            binding = self._bindings[kind] = session.io_binding()
            for past_name, present_name, value in zip(decoder._past, decoder._present, self.values):
                binding.bind_ortvalue_input(past_name, value)
                binding.bind_ortvalue_output(present_name, value)
            # the session's own call, without the Python wrapper's per-call checks, where it has one
            self._runs[kind] = (functools.partial(session._sess.run_with_iobinding, binding._iobinding, None)
                                if hasattr(session, "_sess") and hasattr(binding, "_iobinding")
                                else functools.partial(session.run_with_iobinding, binding))

    def take(self, smaller: "_CacheLevel", positions: int):
        """Copies the first `positions` cached positions of a smaller capacity's buffers into these."""
        for mine, theirs in zip(self.arrays, smaller.arrays):
            mine[:, :, :positions] = theirs[:, :, :positions]

    def run(self, kind: str, new: int):
        """Runs `kind`'s binding for `new` positions per sequence, binding the decoder's id, position
        and logits buffers first if that number changed."""
        if self._shapes.get(kind) != new:
            d, binding = self.decoder, self._bindings[kind]
            binding.bind_input("input_ids", "cpu", 0, np.int64, (d.batch, new), d._ids.ctypes.data)
            binding.bind_input("position_ids", "cpu", 0, np.int64, (d.batch, new), d._positions.ctypes.data)
            binding.bind_output("logits", "cpu", 0, np.float32, (d.batch, new, d._vocab), d._logits.ctypes.data)
            self._shapes[kind] = new
        self._runs[kind]()
