"""`make bench`: generation speed of the shipped exports, ONNX Runtime vs TensorFlow.

Recurrent text models: characters per second sampling one character per step with carried state,
  - ONNX Runtime: `zoo.runtime.sample_text` on `exports/<model>/step.onnx`
  - TensorFlow, tf.function: the Keras model's step compiled once, called per character
  - TensorFlow, eager: `model(tokens, state)` called per character, as most tutorials sample
for a single stream and for a batch of 32 streams.
Transformer: tokens per second generating 256 tokens after a 64-token prompt, with the key/value
cache vs recomputing the whole sequence each step, ONNX Runtime vs TensorFlow, batch 1 and 16.
Numbers depend on the machine; the README quotes a run on the zoo's 2-core build machine.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np

from zoo.runtime import load, sample_logits, sample_text


def _tf_sampler(model, eager: bool):
    import tensorflow as tf

    sizes = model.state_sizes
    if eager:
        step = lambda tokens, *state: model(tokens, list(state), training=False)  # noqa: E731
    else:
        spec = [tf.TensorSpec([None, None], tf.int32)] + [tf.TensorSpec([None, s], tf.float32) for _, s in sizes]
        step = tf.function(lambda tokens, *state: model(tokens, list(state), training=False), input_signature=spec)

    def sample(prompt_ids, length, batch, temperature=0.8, seed=0):
        rng = np.random.default_rng(seed)
        state = [tf.zeros([batch, s]) for _, s in sizes]
        logits, state = step(tf.constant(np.tile(prompt_ids, (batch, 1))), *state)
        for _ in range(length):
            ids = sample_logits(logits[:, -1].numpy(), temperature, 0, rng).astype(np.int32)
            logits, state = step(tf.constant(ids[:, None]), *state)

    return sample


def bench_text(name, export_dir, length, batches, eager_length):
    from zoo.models import load_model

    export = load(export_dir)
    prompt = export.runtime["sample_defaults"]["prompt"]
    model = load_model(Path(export_dir) / "model.keras")
    prompt_ids = np.array([export.runtime["vocabulary"].index(c) for c in prompt], np.int32)
    rows = []
    for batch in batches:
        sample_text(export, prompt, length=10, batch=batch)  # warm up the session
        start = time.perf_counter()
        sample_text(export, prompt, length=length, batch=batch)
        rows.append((name, "ONNX Runtime", batch, batch * length / (time.perf_counter() - start)))
        for label, eager, n in (("TF tf.function", False, length), ("TF eager", True, eager_length)):
            sample = _tf_sampler(model, eager)
            sample(prompt_ids, 5, batch)  # trace / warm up
            start = time.perf_counter()
            sample(prompt_ids, n, batch)
            rows.append((name, label, batch, batch * n / (time.perf_counter() - start)))
    return rows


def bench_cached(name, export_dir, prompt_len, new_tokens, batches):
    """Tokens/s generating `new_tokens` after a `prompt_len` prompt: with the key/value cache vs
    recomputing the whole sequence every step, in ONNX Runtime and in TensorFlow (tf.function)."""
    import tensorflow as tf

    from zoo.models import load_model

    export = load(export_dir)
    info = export.runtime
    model = load_model(Path(export_dir) / "model.keras")
    session = export.session(info["graph"])
    names = [o.name for o in session.get_outputs()]
    past_names = [info["past"].format(i=i, kind=k) for i in range(info["num_layers"]) for k in ("key", "value")]
    present_names = [info["present"].format(i=i, kind=k) for i in range(info["num_layers"]) for k in ("key", "value")]
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, len(info["vocabulary"]), (1, prompt_len)).astype(np.int64)
    dims = (info["num_heads"], info["head_dim"])

    def ort_cached(batch):
        ids = np.tile(prompt, (batch, 1))
        feed = {"input_ids": ids, "position_ids": np.tile(np.arange(prompt_len), (batch, 1))}
        feed.update({p: np.zeros((batch, dims[0], 0, dims[1]), np.float32) for p in past_names})
        out = dict(zip(names, session.run(names, feed)))
        for step in range(new_tokens):
            nxt = out["logits"][:, -1].argmax(-1)[:, None]
            feed = {"input_ids": nxt, "position_ids": np.full((batch, 1), prompt_len + step, np.int64)}
            feed.update({p: out[q] for p, q in zip(past_names, present_names)})
            out = dict(zip(names, session.run(names, feed)))

    def ort_recompute(batch):
        ids = np.tile(prompt, (batch, 1))
        empty = {p: np.zeros((batch, dims[0], 0, dims[1]), np.float32) for p in past_names}
        for _ in range(new_tokens):
            feed = {"input_ids": ids, "position_ids": np.tile(np.arange(ids.shape[1]), (batch, 1)), **empty}
            logits = session.run(["logits"], feed)[0]
            ids = np.concatenate([ids, logits[:, -1].argmax(-1)[:, None]], axis=1)

    cache_spec = [tf.TensorSpec([None, None, dims[0], dims[1]], tf.float32)] * len(past_names)
    step = tf.function(lambda ids, *cache: model(ids, list(cache), training=False),
                       input_signature=[tf.TensorSpec([None, None], tf.int64)] + cache_spec)
    full = tf.function(lambda ids: model(ids, training=False)[0],
                       input_signature=[tf.TensorSpec([None, None], tf.int64)])

    def tf_cached(batch):
        logits, cache = step(tf.constant(np.tile(prompt, (batch, 1))), *model.empty_cache(batch))
        for _ in range(new_tokens):
            nxt = tf.argmax(logits[:, -1], axis=-1)[:, None]
            logits, cache = step(nxt, *cache)

    def tf_recompute(batch):
        ids = tf.constant(np.tile(prompt, (batch, 1)))
        for _ in range(new_tokens):
            logits = full(ids)
            ids = tf.concat([ids, tf.argmax(logits[:, -1], axis=-1)[:, None]], axis=1)

    rows = []
    for batch in batches:
        for engine, fn in (("ONNX Runtime, cache", ort_cached), ("ONNX Runtime, recompute", ort_recompute),
                           ("TF tf.function, cache", tf_cached), ("TF tf.function, recompute", tf_recompute)):
            fn(batch)  # warm up: sessions, traces, allocator
            start = time.perf_counter()
            fn(batch)
            rows.append((name, engine, batch, batch * new_tokens / (time.perf_counter() - start)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m zoo.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exports", default="exports", help="folder holding exports/<model>/")
    parser.add_argument("--models", default="rnn,lstm,transformer")
    parser.add_argument("--length", type=int, default=500, help="characters generated per stream")
    parser.add_argument("--eager-length", type=int, default=200, help="the same for the slow eager loop")
    parser.add_argument("--batches", default="1,32", help="recurrent models' batch sizes")
    parser.add_argument("--cached-batches", default="1,16", help="transformer batch sizes")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=256)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    batches = [int(b) for b in args.batches.split(",")]
    rows, cached_rows = [], []
    for name in args.models.split(","):
        folder = Path(args.exports) / name
        if not (folder / "manifest.json").exists():
            print(f"skipping {name}: no export in {folder} (make train-{name})")
            continue
        if load(folder, verify=False).runtime["kind"] == "text-cached":
            cached_rows += bench_cached(name, folder, args.prompt_tokens, args.new_tokens,
                                        [int(b) for b in args.cached_batches.split(",")])
        else:
            rows += bench_text(name, folder, args.length, batches, args.eager_length)
    print_table(f"Recurrent text generation, characters per second, {args.length} characters per stream", "chars/s", rows)
    print_table(f"Transformer generation, tokens per second, {args.new_tokens} new tokens after a "
                f"{args.prompt_tokens}-token prompt, greedy", "tokens/s", cached_rows)


def print_table(title, unit, rows):
    if not rows:
        return
    print(f"\n{title} ({os.cpu_count()} CPU cores):\n")
    print(f"| model | engine | batch | {unit} |")
    print("|---|---|---:|---:|")
    for name, engine, batch, speed in rows:
        print(f"| {name} | {engine} | {batch} | {speed:,.0f} |")


if __name__ == "__main__":
    main()
