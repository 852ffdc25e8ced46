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

from zoo.runtime.core import Export, sample_logits

SHARED_BATCH = 3  # from this many sequences on, cached decoding runs on all of ONNX Runtime's threads
C_LEVEL_BINDING = True  # bind the cache through onnxruntime's C-level IOBinding where it has one (_Binding)


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
    `precision`: "fp32" (default) or "int8", the graph's int8 variant where the export has one.
    """
    kind = export.runtime.get("kind")
    if kind not in ("text-recurrent", "text-cached"):
        raise ValueError(f"{export.path} holds a {kind!r} model, not a text model")
    if not prompt:
        raise ValueError("the prompt must have at least one character")
    if length < 0 or batch < 1:
        raise ValueError("length must be >= 0 and batch >= 1")
    if kind == "text-cached":
        return _sample_cached(export, prompt, length, temperature, top_k, seed, batch, on_full, precision)
    info = export.runtime
    vocabulary = info["vocabulary"]
    graph = info["graph"]
    specs = {s["name"]: s for s in export.graph(graph)["inputs"]}
    tokens = np.tile(encode(prompt, vocabulary), (batch, 1))
    feed = {name: np.zeros((batch, specs[name]["shape"][1]), np.float32) for name in info["state"]}
    feed["tokens"] = tokens
    out = export.run(graph, feed, precision=precision)  # the whole prompt in one call, then one character a step
    session = export.session(graph, precision=precision)
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(seed)
    generated = np.zeros((batch, length), np.int32)
    for i in range(length):
        ids = sample_logits(out["logits"][:, -1], temperature, top_k, rng).astype(np.int32)
        generated[:, i] = ids
        feed = {name: out[next_name] for name, next_name in info["state"].items()}
        feed["tokens"] = ids[:, None]
        out = dict(zip(names, session.run(names, feed)))
    return [prompt + "".join(vocabulary[j] for j in row) for row in generated]


def cache_names(info: dict, which: str = "past") -> list:
    """A `text-cached` export's cache inputs (`which="past"`) or outputs ("present"), named from its
    manifest's runtime info: layer by layer, the key before the value."""
    return [info[which].format(i=i, kind=kind) for i in range(info["num_layers"]) for kind in ("key", "value")]


def _sample_cached(export, prompt, length, temperature, top_k, seed, batch, on_full, precision):
    info = export.runtime
    vocabulary, limit = info["vocabulary"], info["max_context"]
    if on_full not in ("slide", "refuse"):
        raise ValueError(f"on_full must be 'slide' or 'refuse', got {on_full!r}")
    prompt_ids = encode(prompt, vocabulary).astype(np.int64)
    if on_full == "refuse" and len(prompt_ids) + length > limit:
        raise ValueError(f"prompt ({len(prompt_ids)}) + length ({length}) exceed the model's context of "
                         f"{limit} characters; shorten them or use on_full='slide'")
    history = np.zeros((batch, len(prompt_ids) + length), np.int64)
    history[:, : len(prompt_ids)] = prompt_ids
    filled = min(len(prompt_ids), limit)
    rng = np.random.default_rng(seed)
    with kept_decoder(export, batch, precision) as decoder:
        logits = decoder.prefill(history[:, len(prompt_ids) - filled : len(prompt_ids)])
        for i in range(len(prompt_ids), len(prompt_ids) + length):
            history[:, i] = sample_logits(logits, temperature, top_k, rng)
            if i + 1 == history.shape[1]:
                break
            if decoder.cached == limit:  # the cache is full: re-read the last half of the context
                logits = decoder.prefill(history[:, i + 1 - limit // 2 : i + 1])
            else:
                logits = decoder.step(history[:, i])
    return [prompt + "".join(vocabulary[j] for j in row[len(prompt_ids):]) for row in history]


KEPT_DECODERS = 2  # idle decoders an export keeps for later calls
KEPT_BYTES = 64 << 20  # and their cache buffers' bytes at most (the shipped model's: ~2.6 MB per sequence)
_kept, _kept_lock = weakref.WeakKeyDictionary(), threading.Lock()  # Export -> its idle decoders, newest last


@contextlib.contextmanager
def kept_decoder(export, batch: int, precision: str = "fp32"):
    """A CachedDecoder of `export` for `batch` sequences at `precision`: an idle one kept from an
    earlier call (with the step bindings it has made), else a new one; kept again afterwards, up to
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


class CachedDecoder:
    """A `text-cached` export's decoder graph run with its key/value cache in preallocated buffers.

    Each cache tensor has two buffers of [batch, heads, max_context, head_dim] in ONNX Runtime's
    memory (the GPU's under CUDA); a call that leaves `n` positions cached reads the pasts from
    buffer `past % 2` and writes the presents into buffer `n % 2`, bound by pointer with the shapes
    of the moment, so the growing cache is neither allocated by ONNX Runtime nor copied through
    numpy. Token ids, positions and logits live in numpy buffers. `prefill(ids)` starts from an
    empty cache on all of ONNX Runtime's threads; `step(ids)` appends one token per sequence, on one
    thread for fewer than SHARED_BATCH sequences (one new token of one or two sequences is too little
    work to share between threads).

    Binding is what a step costs beyond the graph (2 x layers x 2 cache tensors, ~1-3 us each), so
    a step at a past length this decoder has stepped from before gets a binding of its own, made
    once and then only run: the slide's second pass over the context, and every later generation
    with a kept decoder (`kept_decoder`, which `sample_text` uses), bind nothing. A first visit
    rebinds one shared binding instead (a new binding costs about twice a rebinding)."""

    def __init__(self, export, batch: int, precision: str = "fp32"):
        import onnxruntime as ort

        info = export.runtime
        graph = info["graph"]
        self.batch, self.precision, self.limit, self.cached = batch, precision, info["max_context"], 0
        self.heads, self.head_dim, vocab = info["num_heads"], info["head_dim"], len(info["vocabulary"])
        self.past, self.present = cache_names(info, "past"), cache_names(info, "present")
        prefill = export.session(graph, precision=precision)
        self._step_session = export.session(graph, threads=1 if batch < SHARED_BATCH else 0, precision=precision)
        self._device = "cuda" if "CUDAExecutionProvider" in self._step_session.get_providers() else "cpu"
        self._bindings = {"prefill": _Binding(prefill, self._device), "step": _Binding(self._step_session, self._device)}
        self._steps, self._visited = {}, set()  # past length -> its own step binding; lengths stepped from
        size = batch * self.heads * self.limit * self.head_dim
        self.nbytes = 2 * len(self.past) * size * 4  # the cache buffers
        self._buffers = [[ort.OrtValue.ortvalue_from_shape_and_type([size], np.float32, self._device, 0)
                          for _ in range(2)] for _ in self.past]  # kept: the pointers below are into them
        self._pointers = [[b.data_ptr() for b in pair] for pair in self._buffers]
        self._ids, self._positions = np.zeros(batch * self.limit, np.int64), np.zeros(batch * self.limit, np.int64)
        self._logits = np.zeros(batch * self.limit * vocab, np.float32)
        self._vocab = vocab
        # what a step writes and reads: one id and one position per sequence, its logits
        self._step_ids, self._step_positions = self._ids[:batch], self._positions[:batch]
        self._step_logits = self._logits[: batch * vocab].reshape(batch, vocab)

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        """ids [batch, n], n <= max_context, from position 0 with an empty cache -> last logits [batch, V]."""
        self.cached = 0
        return self._run(self._bindings["prefill"], ids)

    def step(self, ids: np.ndarray) -> np.ndarray:
        """ids [batch], one new token per sequence after the cached ones -> its logits [batch, V]."""
        past = self.cached
        own = self._steps.get(past)
        fits = ids.shape == (self.batch,)
        if own is None and fits and past in self._visited:  # stepped from before, so the context had room
            own = self._steps[past] = _Binding(self._step_session, self._device)
            self._bind(own, past, 1)
        if own is None or not fits:
            logits = self._run(self._bindings["step"], ids[:, None])  # checks the batch and the context
            self._visited.add(past)
            return logits
        self._step_ids[:] = ids
        self._step_positions[:] = past
        own.run()
        self.cached = past + 1
        return self._step_logits

    def _run(self, b, ids: np.ndarray) -> np.ndarray:
        batch, new = ids.shape
        past = self.cached
        if batch != self.batch:
            raise ValueError(f"this decoder holds the cache of {self.batch} sequences, got ids of {batch}")
        if past + new > self.limit:
            raise ValueError(f"{past} cached + {new} new positions exceed the model's context of {self.limit}")
        n = batch * new
        self._ids[:n] = ids.ravel()
        self._positions[:n] = past if new == 1 else np.tile(np.arange(past, past + new), batch)
        self._bind(b, past, new)
        b.run()
        self.cached = past + new
        return self._logits[: n * self._vocab].reshape(batch, new, self._vocab)[:, -1]

    def _bind(self, b, past: int, new: int):
        """Binds `b` for `new` positions per sequence after `past` cached ones."""
        batch = self.batch
        b.host("input_ids", False, np.int64, (batch, new), self._ids)
        b.host("position_ids", False, np.int64, (batch, new), self._positions)
        b.host("logits", True, np.float32, (batch, new, self._vocab), self._logits)
        read, write = past % 2, (past + new) % 2
        past_shape = (batch, self.heads, past, self.head_dim)
        present_shape = (batch, self.heads, past + new, self.head_dim)
        bind_input, bind_output, device, f32 = b.bind_input, b.bind_output, b.cache_device, np.float32
        for past_name, present_name, pointers in zip(self.past, self.present, self._pointers):
            bind_input(past_name, device, f32, past_shape, pointers[read])
            bind_output(present_name, device, f32, present_shape, pointers[write])


class _Binding:
    """One session's IOBinding, bound by pointer: `bind_input` / `bind_output(name, device, dtype,
    shape, pointer)` with `device` one of `host_device` / `cache_device`. They are onnxruntime's
    C-level binding calls where it has them: the Python wrapper of 1.32 builds an OrtDevice and
    checks WebGPU capture state on every call, several times the cost of the call itself, and a
    token rebinds 2 x layers x 2 cache tensors. Host buffers (ids, positions, logits) are rebound
    only when their shape changes (`host`)."""

    def __init__(self, session, device: str):
        import onnxruntime as ort

        binding = session.io_binding()
        self._shapes = {}
        self.fast = C_LEVEL_BINDING and hasattr(binding, "_iobinding") and hasattr(session, "_sess")
        if self.fast:
            c = binding._iobinding
            self.bind_input, self.bind_output = c.bind_input, c.bind_output
            self.host_device = ort.OrtDevice.make("cpu", 0)._get_c_device()
            self.cache_device = ort.OrtDevice.make(device, 0)._get_c_device()
            self.run = functools.partial(session._sess.run_with_iobinding, c, None)
        else:  # an onnxruntime without these internals: its public calls
            self.bind_input = lambda name, dev, dtype, shape, ptr: binding.bind_input(name, dev, 0, dtype, shape, ptr)
            self.bind_output = lambda name, dev, dtype, shape, ptr: binding.bind_output(name, dev, 0, dtype, shape, ptr)
            self.host_device, self.cache_device = "cpu", device
            self.run = lambda: session.run_with_iobinding(binding)

    def host(self, name: str, output: bool, dtype, shape: tuple, array: np.ndarray):
        if self._shapes.get(name) != shape:
            (self.bind_output if output else self.bind_input)(name, self.host_device, dtype, shape, array.ctypes.data)
            self._shapes[name] = shape
