"""Character text generation in numpy around an exported step graph.

- `text-recurrent` exports (rnn, lstm): a step graph carrying the recurrent state.
- `text-cached` exports (transformer): a decoder graph carrying a key/value cache; a prompt is
  prefilled in one call, then each new character is one call with the cache.
"""

import numpy as np

from zoo.runtime.core import Export, sample_logits

SHARED_BATCH = 3  # from this many sequences on, cached decoding runs on all of ONNX Runtime's threads


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


def _sample_cached(export, prompt, length, temperature, top_k, seed, batch, on_full, precision):
    info = export.runtime
    vocabulary, limit, graph = info["vocabulary"], info["max_context"], info["graph"]
    if on_full not in ("slide", "refuse"):
        raise ValueError(f"on_full must be 'slide' or 'refuse', got {on_full!r}")
    prompt_ids = encode(prompt, vocabulary).astype(np.int64)
    if on_full == "refuse" and len(prompt_ids) + length > limit:
        raise ValueError(f"prompt ({len(prompt_ids)}) + length ({length}) exceed the model's context of "
                         f"{limit} characters; shorten them or use on_full='slide'")
    past_names = [info["past"].format(i=i, kind=kind) for i in range(info["num_layers"]) for kind in ("key", "value")]
    present_names = [info["present"].format(i=i, kind=kind) for i in range(info["num_layers"]) for kind in ("key", "value")]
    # One new token of one or two sequences is too little work to share between threads (one
    # thread decoded faster here); larger batches and the prefill (export.run) use all of ONNX
    # Runtime's threads.
    session = export.session(graph, threads=1 if batch < SHARED_BATCH else 0, precision=precision)
    names = [o.name for o in session.get_outputs()]
    empty = np.zeros((batch, info["num_heads"], 0, info["head_dim"]), np.float32)

    def prefill(ids):  # ids [batch, n] from position 0, with an empty cache
        feed = {"input_ids": ids, "position_ids": np.tile(np.arange(ids.shape[1], dtype=np.int64), (batch, 1))}
        feed.update({name: empty for name in past_names})
        return export.run(graph, feed, precision=precision)

    # Decoding keeps the cache inside ONNX Runtime: each step's presents (OrtValues) are bound as
    # the next step's pasts, with no copy of the growing cache into numpy and back.
    binding = session.io_binding()
    device = "cuda" if "CUDAExecutionProvider" in session.get_providers() else "cpu"

    def bind_cache(values):  # values: {past name: OrtValue or numpy array}
        for name, value in values.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)

    history = np.zeros((batch, len(prompt_ids) + length), np.int64)
    history[:, : len(prompt_ids)] = prompt_ids
    filled = min(len(prompt_ids), limit)
    out = prefill(history[:, len(prompt_ids) - filled : len(prompt_ids)])
    logits = out["logits"][:, -1]
    bind_cache({p: out[q] for p, q in zip(past_names, present_names)})
    position = filled
    rng = np.random.default_rng(seed)
    for i in range(len(prompt_ids), len(prompt_ids) + length):
        ids = sample_logits(logits, temperature, top_k, rng).astype(np.int64)
        history[:, i] = ids
        if i + 1 == history.shape[1]:
            break
        if position == limit:  # the cache is full: re-read the last half of the context
            keep = limit // 2
            out = prefill(history[:, i + 1 - keep : i + 1])
            logits = out["logits"][:, -1]
            bind_cache({p: out[q] for p, q in zip(past_names, present_names)})
            position = keep
            continue
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(ids[:, None]))
        binding.bind_cpu_input("position_ids", np.full((batch, 1), position, np.int64))
        binding.clear_binding_outputs()  # fresh outputs: the presents grow by one position a step
        for name in names:
            binding.bind_output(name, device)
        session.run_with_iobinding(binding)
        values = dict(zip(names, binding.get_outputs()))
        logits = values["logits"].numpy()[:, -1]
        bind_cache({p: values[q] for p, q in zip(past_names, present_names)})
        position += 1
    return [prompt + "".join(vocabulary[j] for j in row[len(prompt_ids):]) for row in history]
