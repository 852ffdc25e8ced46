"""`make bench`: generation speed of the shipped exports, ONNX Runtime vs TensorFlow.

Recurrent text models: characters per second sampling one character per step with carried state,
  - ONNX Runtime: `zoo.runtime.sample_text` on `exports/<model>/step.onnx`
  - TensorFlow, tf.function: the Keras model's step compiled once, called per character
  - TensorFlow, eager: `model(tokens, state)` called per character, as most tutorials sample
for a single stream and for a batch of 32 streams.
Transformer: tokens per second generating 256 tokens after a 64-token prompt, with the key/value
cache vs recomputing the whole sequence each step, ONNX Runtime vs TensorFlow, batch 1 and 16.
PixelCNN: seconds to sample 16 images pixel by pixel: the runtime (ONNX Runtime on the strip of
rows each pixel sees) vs the naive loop calling Keras `predict` on the whole image 784 times.
WaveNet: audio samples per second, the vocoder's cached step graph (`zoo.runtime.audio`, sampling
included) vs running the full network on the last receptive field each step, and the whole
two-stage generation (prior, then vocoder) as the runtime runs it.
Diffusion: images per second of the numpy DDIM (10, 20, 50, 100 steps) and DDPM (1,000 steps)
samplers around the ONNX Runtime denoiser vs the Keras one, 16 images in one batch.
Image graphs (gan generator, vae decoder, pixelcnn network on a whole image, diffusion denoiser):
one pass of the exported graph in ONNX Runtime vs the Keras function it was exported from in a
tf.function, the same inputs, alternated in rounds, batch 1 and 64.

Each model's figures go to a record, `benchmarks/<model>.json` (the date, the command, the machine,
the package versions and a hash of the export's manifest beside the rows), and
`python -m zoo.bench --readme` writes the speed tables of `benchmarks/README.md` from the records
(`make bench` does both), so every figure in those tables has a source. Numbers depend on the machine; the records are
runs on the zoo's 2-core build machine.
"""

import argparse
import functools
import hashlib
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from zoo.runtime import load, sample_logits, sample_text
from zoo.runtime.text import cache_names, release_decoders
from zoo.runtime.core import Progress, cpu_features
from zoo.files import write_json

# Seconds of rest before each timed run of alternated loops: ONNX Runtime's worker threads spin a
# while after a call, and on 2 cores the loop timed right after another session's lost 14-25% to
# them (the runtime's first-call and kept-decoder loops traded places when their order was swapped).
SETTLE = 0.2


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
    past_names = cache_names(info)
    rng = np.random.default_rng(0)
    usable = [i for i, c in enumerate(info["vocabulary"]) if c != "$"]  # '$' is GenAI's end/pad id
    prompt = rng.choice(usable, (1, prompt_len)).astype(np.int64)
    dims = (info["num_heads"], info["head_dim"])
    prompt_text = "".join(info["vocabulary"][i] for i in prompt[0])

    def ort_cached(batch):  # the runtime's own loop (cache kept in ONNX Runtime values), greedy
        sample_text(export, prompt_text, length=new_tokens, temperature=0, batch=batch)

    first_call = load(export_dir, verify=False)  # its own sessions and decoders: the kept ones above stay kept

    def ort_cached_first(batch):  # the same with a new decoder, as a program's first call makes
        release_decoders(first_call)
        sample_text(first_call, prompt_text, length=new_tokens, temperature=0, batch=batch)

    genai = {}

    def genai_cached(batch):  # ONNX Runtime GenAI's own C++ loop on the same folder and graph, greedy
        import onnxruntime_genai as og

        if "model" not in genai:
            genai["model"] = og.Model(str(export_dir))
        params = og.GeneratorParams(genai["model"])
        params.set_search_options(max_length=prompt_len + new_tokens, do_sample=False)
        generator = og.Generator(genai["model"], params)
        generator.append_tokens(prompt.astype(np.int32))  # one stream: the comparison the issue asks for
        while not generator.is_done():
            generator.generate_next_token()
        return len(generator.get_sequence(0)) - prompt_len  # it stops early at '$'

    def ort_recompute(batch):
        ids = np.tile(prompt, (batch, 1))
        for _ in range(new_tokens):
            zeros = np.zeros((batch, dims[0], ids.shape[1], dims[1]), np.float32)  # a cache of the ids' length
            feed = {"input_ids": ids, "position_ids": np.tile(np.arange(ids.shape[1]), (batch, 1)),
                    **{p: zeros for p in past_names}}
            logits = session.run(["logits"], feed)[0]
            ids = np.concatenate([ids, logits[:, -1].argmax(-1)[:, None]], axis=1)

    cache_spec = [tf.TensorSpec([None, dims[0], None, dims[1]], tf.float32)] * len(past_names)
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
        engines = [("ONNX Runtime, cache (zoo.runtime, first call)", ort_cached_first),
                   ("ONNX Runtime, cache (zoo.runtime, kept decoder)", ort_cached)]
        if batch == 1 and importlib.util.find_spec("onnxruntime_genai") and (Path(export_dir) / "genai_config.json").exists():
            engines.append(("ONNX Runtime GenAI, cache (its C++ loop)", genai_cached))
        engines += [("ONNX Runtime, recompute", ort_recompute), ("TF tf.function, cache", tf_cached),
                    ("TF tf.function, recompute", tf_recompute)]
        for engine, fn in engines:
            fn(batch)  # warm up: sessions, traces, allocator
        ort_cached(batch)  # the kept decoder's second call makes its step bindings (CachedDecoder)
        speeds = {engine: [] for engine, _ in engines}
        for r in range(15):  # the ONNX Runtime loops (the runtime's, GenAI's) alternate, median of 15; the rest once
            for engine, fn in engines:
                if r and "cache (" not in engine:
                    continue
                time.sleep(SETTLE)
                start = time.perf_counter()
                tokens = fn(batch) or batch * new_tokens
                speeds[engine].append(tokens / (time.perf_counter() - start))
        rows += [(name, engine, batch, float(np.median(v))) for engine, v in speeds.items()]
    return rows


def bench_pixels(name, export_dir, images):
    """Seconds to draw `images` images: runtime strips, runtime whole image, Keras predict x 784."""
    from zoo.models import load_model
    from zoo.runtime.images import sample_pixels

    export = load(export_dir)
    info = export.runtime
    model = load_model(Path(export_dir) / "model.keras")
    labels = np.arange(images, dtype=np.int32) % info["num_classes"]

    def keras_naive():
        rng = np.random.default_rng(0)
        x = np.zeros((images, info["height"], info["width"], 1), np.float32)
        for i in range(info["height"]):
            for j in range(info["width"]):
                if info["conditional"]:  # predict() hands the model one input; call it with both
                    logits = np.asarray(model(x, labels))[:, i, j, 0]
                else:
                    logits = model.predict(x, verbose=0, batch_size=images)[:, i, j, 0]
                x[:, i, j, 0] = rng.random(images) < 1.0 / (1.0 + np.exp(-logits))

    rows = []
    for engine, fn in (("ONNX Runtime, strips of rows (zoo.runtime)", lambda: sample_pixels(export, labels, np.random.default_rng(0))),
                       ("ONNX Runtime, whole image each pixel", lambda: sample_pixels(export, labels, np.random.default_rng(0), full_image=True)),
                       ("Keras predict, whole image each pixel", keras_naive)):
        start = time.perf_counter()
        fn()
        rows.append((name, engine, images, time.perf_counter() - start))
    return rows


def bench_diffusion(name, export_dir, images, samplers):
    """Images/s of the numpy samplers around the ONNX Runtime denoiser (zoo.runtime) and around the
    Keras EMA denoiser in a tf.function, at the manifest's default guidance scale."""
    from zoo.models import load_model
    from zoo.models.diffusion import tf_denoiser
    from zoo.runtime import diffusion
    from zoo.runtime.images import denoiser

    export = load(export_dir)
    info = export.runtime
    schedule = diffusion.Schedule(**info["schedule"])
    guidance = info["sample_defaults"]["guidance"]
    labels = np.arange(images, dtype=np.int32) % info["num_classes"]
    engines = (("ONNX Runtime (zoo.runtime)", denoiser(export)),
               ("TensorFlow, Keras EMA network", tf_denoiser(load_model(Path(export_dir) / "model.keras"))))
    batch = 2 * images  # a guided step denoises every image twice, with and without its label
    for _, denoise in engines:  # warm up at the batch the samplers run (the first call at a new size is slow)
        denoise(np.zeros((batch, 28, 28, 1), np.float32), np.zeros(batch, np.int32), np.zeros(batch, np.int32))
    rows = []
    for row in samplers:
        kind, steps, scale = diffusion.parse_sampler(row)
        seconds = {engine: [] for engine, _ in engines}
        while True:  # the engines alternate; short samplers repeat (median) so a slow spell hits both
            for engine, denoise in engines:
                start = time.perf_counter()
                diffusion.sample(denoise, schedule, labels, kind, steps, guidance=guidance if scale is None else scale,
                                 conditional=info["conditional"], null_label=info["null_label"])
                seconds[engine].append(time.perf_counter() - start)
            if len(seconds[engines[0][0]]) >= 5 or sum(sum(t) for t in seconds.values()) > 6:
                break
        rows += [(name, f"{engine}, {row}", images, images / float(np.median(seconds[engine]))) for engine, _ in engines]
    return rows


def bench_audio(name, export_dir, samples, recompute_samples, batches):
    """Samples/s of the vocoder: cached step (ONNX Runtime, and the Keras step in a tf.function) vs
    recomputing the receptive field with the full network every step (ONNX Runtime); and of the
    whole two-stage generation (prior, then vocoder) as `zoo.runtime.audio.generate` runs it."""
    import tensorflow as tf

    from zoo.models import load_model
    from zoo.runtime.audio import HOP, MEL_BINS, SILENCE

    export = load(export_dir)
    info = export.runtime
    field = info["receptive_field"]
    model = load_model(Path(export_dir) / "model.keras")
    session = export.session(info["network_graph"])
    step = tf.function(model.step)
    width = info["condition_channels"]

    def own_process(code):
        # In a fresh process, as a program using zoo.runtime runs. With TensorFlow loaded in the same
        # process (this one) an earlier bench measured 7,800 samples/s against 11,000 alone, on runs
        # minutes apart on a machine whose speed varied, so the size of the effect is uncertain.
        prelude = ("import time; import numpy as np; from zoo.runtime import load; "
                   "from zoo.runtime.audio import StepRunner, generate, vocode; "
                   f"e = load({str(export_dir)!r}); ")
        out = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, check=True)
        return float(out.stdout.split()[-1])

    def ort_vocoder(batch, n):
        return own_process(
            f"cond = np.zeros(({batch}, {-(-n // HOP)}, {width}), np.float32); "
            f"vocode(StepRunner(e, {batch}), cond, 400, 1.0, np.random.default_rng(0)); "
            f"t = time.perf_counter(); vocode(StepRunner(e, {batch}), cond, {n}, 1.0, np.random.default_rng(0)); "
            f"print({batch * n} / (time.perf_counter() - t))")

    def ort_two_stages(batch):
        return own_process(
            f"generate(e, [7] * {batch}, seconds=0.1); "
            f"t = time.perf_counter(); clips = generate(e, {[i % 10 for i in range(batch)]}); "
            f"print(sum(map(len, clips)) / (time.perf_counter() - t))")

    def ort_recompute(batch, n):
        rng = np.random.default_rng(0)
        window = np.full((batch, field), SILENCE, np.int32)
        mel = np.zeros((batch, -(-field // HOP), MEL_BINS), np.float32)
        digit = np.full(batch, 7, np.int32)
        for _ in range(n):
            logits = session.run(["logits"], {"samples": window, "mel": mel, "digit": digit})[0][:, -1]
            nxt = sample_logits(logits, 1.0, 0, rng).astype(np.int32)
            window = np.concatenate([window[:, 1:], nxt[:, None]], axis=1)

    def tf_cached(batch, n):
        rng = np.random.default_rng(0)
        queues, row = model.initial_queues(batch), tf.zeros([batch, width])
        current = np.full(batch, SILENCE, np.int32)
        for _ in range(n):
            logits, queues = step(tf.constant(current), row, queues)
            current = sample_logits(logits.numpy(), 1.0, 0, rng).astype(np.int32)

    rows = []
    for batch in batches:
        rows.append((name, "ONNX Runtime, vocoder cached step (zoo.runtime, own process)", batch,
                     ort_vocoder(batch, samples)))
        rows.append((name, "ONNX Runtime, prior + vocoder, whole clips (zoo.runtime, own process)", batch,
                     ort_two_stages(batch)))
        for engine, fn, n in (("TF tf.function, vocoder cached step", tf_cached, recompute_samples * 4),
                              (f"ONNX Runtime, vocoder recompute {field} samples", ort_recompute, recompute_samples)):
            fn(batch, 20)  # warm up
            start = time.perf_counter()
            fn(batch, n)
            rows.append((name, engine, batch, batch * n / (time.perf_counter() - start)))
    return rows


def graph_inputs(graph, batch: int, sizes: dict, rng) -> dict:
    """Inputs for an export `Graph` at `batch`: floats standard normal, integers within the graph's
    ranges; other dynamic axes take their size from `sizes` (e.g. pixelcnn's rows: 28)."""
    feed = {}
    for spec in graph.input_signature:
        shape = [batch if d == "batch" else sizes[d] if isinstance(d, str) else d for d in graph.axes[spec.name]]
        if spec.dtype.is_integer:
            lo, hi = graph.ranges.get(spec.name, (0, 1))
            feed[spec.name] = rng.integers(lo, hi, shape).astype(spec.dtype.as_numpy_dtype)
        else:
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype.as_numpy_dtype)
    return feed


def main_graph(name, export_dir):
    """(the export, the `zoo.export.Graph` of its main graph, the manifest's `graph`, rebuilt from its
    model.keras: the Keras function the ONNX file was made from)."""
    from zoo import registry
    from zoo.models import load_model

    export = load(export_dir)
    model = load_model(Path(export_dir) / "model.keras")
    return export, next(g for g in registry.get(name).export_graphs(model) if g.name == export.runtime["graph"])


def alternated(fns: dict, rounds: int, round_seconds: float, calls: int = None) -> dict:
    """{name: median seconds per call} of each callable in `fns`, warmed up by one call, then timed in
    `rounds` rounds of `calls` calls (default: as many as take ~`round_seconds`), the callables
    alternating round by round, so a slow spell of the machine hits all of them."""
    counts = {}
    for name, fn in fns.items():
        fn()
        start, n = time.perf_counter(), 0
        while calls is None and time.perf_counter() - start < round_seconds:
            fn()
            n += 1
        counts[name] = calls or max(1, n)
    seconds = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(counts[name]):
                fn()
            seconds[name].append((time.perf_counter() - start) / counts[name])
    return {name: float(np.median(s)) for name, s in seconds.items()}


def bench_graphs(name, export_dir, batches, rounds=7, round_seconds=0.3, sizes=None):
    """Images/s of one pass of the export's main graph (the manifest's `graph`): its ONNX Runtime
    session vs the Keras function it was exported from in a tf.function, on the same inputs. Each
    engine's calls are timed in rounds of ~`round_seconds`, the engines alternating; the median round
    counts, so a slow spell of the machine hits both."""
    import tensorflow as tf

    export, graph = main_graph(name, export_dir)
    graph_name = graph.name
    session = export.session(graph_name)
    outputs = [o.name for o in session.get_outputs()]
    keras_fn = graph.tf_function()
    rows = []
    for batch in batches:
        feed = graph_inputs(graph, batch, sizes or {"rows": 28}, np.random.default_rng(0))
        tensors = [tf.constant(feed[spec.name]) for spec in graph.input_signature]
        engines = {"ONNX Runtime": lambda: session.run(outputs, feed),
                   "TF tf.function": lambda: [t.numpy() for t in keras_fn(*tensors).values()]}
        for engine, seconds in alternated(engines, rounds, round_seconds).items():
            rows.append((name, f"{engine}, {graph_name}", batch, batch / seconds))
    return rows


def profile_graph(name, export_dir, batch: int = 16, runs: int = 20, sizes=None) -> list:
    """Where one pass of the export's main graph spends its time in ONNX Runtime: the session's own
    profile (`enable_profiling`) over `runs` passes at `batch`, summed per op type, largest first:
    [(op type, nodes, microseconds per pass, share)]."""
    import onnxruntime as ort

    export, graph = main_graph(name, export_dir)
    feed = graph_inputs(graph, batch, sizes or {"rows": 28}, np.random.default_rng(0))
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(os.environ.get("TMPDIR", "/tmp")) / f"zoo-profile-{name}")
    session = ort.InferenceSession(str(export.path / export.graph_file(graph.name)), options,
                                   providers=["CPUExecutionProvider"])
    for _ in range(3):  # warm up: not profiled apart, so drop the first passes below
        session.run(None, feed)
    for _ in range(runs):
        session.run(None, feed)
    path = Path(session.end_profiling())
    events = json.loads(path.read_text())
    path.unlink()
    per_op, nodes, model_runs = {}, {}, 0
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            model_runs += 1
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = args.get("op_name", "?")
            per_op[op] = per_op.get(op, 0) + event["dur"]
            nodes.setdefault(op, set()).add(event["name"])
    total = sum(per_op.values())
    model_runs = max(1, model_runs)
    return sorted(((op, len(nodes[op]), us / model_runs, us / total) for op, us in per_op.items()),
                  key=lambda row: -row[2])


# --- Records and the benchmarks page's tables ----------------------------------------------------

RECORDS = Path("benchmarks")
# The generated tables: id -> what a record's rows measure. Between a page's
# `<!-- bench:ID -->` and `<!-- /bench:ID -->` lines, `--readme` writes the table of every record's
# rows for ID, models in the registry's order, with each record's date and command below it.
TABLES = {
    "recurrent": ("chars/s", "batch"),
    "cached": ("tokens/s", "batch"),
    "graphs": ("images/s", "batch"),
    "pixels": ("seconds", "images"),
    "diffusion": ("images/s", "images"),
    "audio": ("samples/s", "batch"),
}


def machine() -> dict:
    return {"cpus": os.cpu_count(), "cpu": cpu_features()["cpu"], "platform": platform.platform(),
            "python": platform.python_version()}


def timed_files_sha256(manifest: dict) -> str:
    """A digest of the export files a benchmark times: every file the manifest lists (graphs, test data,
    model.keras, the SavedModel) but the model card and the precision variants (`<graph>.int8.onnx`,
    `<graph>.standard.onnx` and their test data), which no benchmark of `make bench` runs. A record names
    it, so that a manifest or card rewritten over the same graphs keeps its records."""
    timed = sorted((path, info["sha256"]) for path, info in manifest["files"].items()
                   if path != "README.md" and ".int8." not in path and ".standard" not in path)
    return hashlib.sha256(json.dumps(timed).encode()).hexdigest()


def write_record(folder, name, export_dir, tables: dict, command: str) -> Path:
    """`folder/<name>.json`: {table id: {"title", "rows": [[engine, batch, value], ...]}} with the date,
    the command, the machine, the package versions (as training and export record them) and the
    sha256 of the export's manifest.json."""
    from zoo.train import package_versions

    manifest = Path(export_dir) / "manifest.json"
    record = {"model": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command,
              "machine": machine(), "packages": package_versions(),
              "export": {"folder": str(export_dir), "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
                         "timed_files_sha256": timed_files_sha256(json.loads(manifest.read_text()))},
              "tables": {tid: {"title": title, "rows": [[engine, batch, value] for _, engine, batch, value in rows]}
                         for tid, (title, rows) in tables.items() if rows}}
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(path, record, indent=1)


def read_records(folder) -> list:
    """The records in `folder`, models in the registry's order."""
    from zoo.registry import MODELS

    order = list(MODELS)
    records = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]
    return sorted(records, key=lambda r: (order.index(r["model"]) if r["model"] in order else len(order), r["model"]))


def _value(value) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def render_table(records, table_id, folder=RECORDS, links=None) -> str:
    """The markdown for one table id: its title, the rows of every record that has it, and a line
    per record naming its file, date, command and machine (a link to `links/<model>.json`; links
    None: the records' folder name, as from a page beside it; "": the page's own folder)."""
    unit, column = TABLES[table_id]
    folder = Path(folder).name if links is None else links
    having = [r for r in records if table_id in r["tables"]]
    if not having:
        return f"(no record in {folder}/ has this table yet: `make bench`)"
    lines = [having[0]["tables"][table_id]["title"] + ":", "", f"| model | engine | {column} | {unit} |",
             "|---|---|---:|---:|"]
    for r in having:
        lines += [f"| {r['model']} | {engine} | {batch} | {_value(value)} |"
                  for engine, batch, value in r["tables"][table_id]["rows"]]
    lines.append("")
    for r in having:
        m, p = r["machine"], r["packages"]
        title = r["tables"][table_id]["title"]
        differs = "" if title == having[0]["tables"][table_id]["title"] else f"; its table: {title}"
        path = f"{folder}/{r['model']}.json" if folder else f"{r['model']}.json"
        lines.append(f"- {r['model']}: [`{path}`]({path}), "
                     f"{r['date'][:10]}, `{r['command']}`, {m['cpus']} CPU cores, onnxruntime {p.get('onnxruntime')}, "
                     f"tensorflow {p.get('tensorflow')}{differs}")
    return "\n".join(lines)


PAGE = RECORDS / "README.md"  # the benchmarks page (the docs site's too): the tables beside their records


def update_readme(readme=PAGE, folder=RECORDS, links=None) -> bool:
    """Rewrite every `<!-- bench:ID -->` ... `<!-- /bench:ID -->` block of `readme` from the records
    in `folder`, linking to them as `links/<model>.json` (None: the path from `readme`'s folder).
    True when the file changed."""
    readme = Path(readme)
    if links is None:
        links = os.path.relpath(Path(folder).resolve(), readme.resolve().parent)
        links = "" if links == "." else links
    text = readme.read_text()
    records = read_records(folder)

    def block(match):
        table_id = match.group(1)
        if table_id not in TABLES:
            raise ValueError(f"{readme}: unknown benchmark table {table_id!r} (known: {', '.join(TABLES)})")
        return f"<!-- bench:{table_id} -->\n{render_table(records, table_id, folder, links)}\n<!-- /bench:{table_id} -->"

    new = re.sub(r"<!-- bench:(\w+) -->\n.*?<!-- /bench:\1 -->", block, text, flags=re.S)
    if new != text:
        readme.write_text(new)
    return new != text


def bench_wavenet_stages(run_dir, steps=30, rounds=3):
    """Seconds per training step of each wavenet stage alone (the default run trains both in one
    step): the same batches, the stages' own losses and weights, alternated `rounds` times in one
    process. Returns rows (stage, seconds per step) and the share of the joint step."""
    import json

    import keras
    import tensorflow as tf

    from zoo.models import load_model, wavenet

    cfg = wavenet.Config(**json.loads((Path(run_dir) / "run.json").read_text())["config"])
    data = wavenet.load_data(cfg)
    model = load_model(Path(run_dir) / "model.keras")
    prior_vars = model.prior.trainable_variables
    prior_ids = {id(v) for v in prior_vars}
    vocoder_vars = [v for v in model.trainable_variables if id(v) not in prior_ids]
    optimizers = {"vocoder": keras.optimizers.Adam(1e-4), "prior": keras.optimizers.Adam(1e-4)}

    def step_fn(stage):
        @tf.function
        def step(vocoder, prior):
            with tf.GradientTape() as tape:
                if stage == "vocoder":
                    loss, _ = model.vocoder_nll(vocoder["codes"], vocoder["mel"], vocoder["digit"], vocoder["weight"], True)
                else:
                    loss, _ = model.prior_nll(prior["frames"], prior["lengths"], prior["digit"], True)
            variables = vocoder_vars if stage == "vocoder" else prior_vars
            optimizers[stage].apply_gradients(zip(tape.gradient(loss, variables), variables))
        return step

    steps_fns = {stage: step_fn(stage) for stage in ("vocoder", "prior")}
    batches = list(data.train.take(steps))
    seconds = {stage: [] for stage in steps_fns}
    for stage, fn in steps_fns.items():
        fn(*batches[0])  # trace
    for _ in range(rounds):
        for stage, fn in steps_fns.items():
            start = time.perf_counter()
            for batch in batches:
                fn(*batch)
            seconds[stage].append((time.perf_counter() - start) / len(batches))
    per_step = {stage: min(v) for stage, v in seconds.items()}
    total = sum(per_step.values())
    return [(stage, per_step[stage], per_step[stage] / total) for stage in per_step]


def compare_graphs(old, new, past: int = 128, rounds: int = 7, steps: int = None, threads=(1, 2), batch: int = 1,
                   capacity: int = None) -> dict:
    """One step of two ONNX graphs with the same inputs and outputs (a shipped graph and its
    rewrite), timed alternately in this process: {threads: (old us, new us)}, node counts, and the
    largest output difference. Dynamic axes: `batch`, one new position, `past` cached ones. Each
    round runs `steps` steps (default: as many as take about half a second; `alternated`).

    A decoder whose cache has a fixed capacity (axis `capacity`, written in place) runs as
    zoo.runtime runs it on the CPU: past and present bound to one buffer of `capacity` positions
    (default: the capacity zoo.runtime.text.CachedDecoder holds `past` + 1 positions in), the same
    `past` cached positions at its start; its presents are compared over the positions both hold."""
    import onnx
    import onnxruntime as ort

    from zoo.runtime.text import cpu_capacity

    if capacity is None:
        capacity = cpu_capacity(past + 1)
    rng = np.random.default_rng(0)
    protos = [onnx.load(str(path), load_external_data=False) for path in (old, new)]
    feeds, common, in_place = [], {}, []
    for proto in protos:
        sizes = {"batch": batch, "time": 1, "sequence": 1, "past_sequence": past, "capacity": capacity}
        feed, bound = {}, False
        for vi in proto.graph.input:
            t = vi.type.tensor_type
            dims = [d.dim_param for d in t.shape.dim]
            bound = bound or "capacity" in dims
            shape = [d.dim_value or sizes.get(d.dim_param, 1) for d in t.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
            if vi.name == "position_ids":  # the new position follows the `past` cached ones
                feed[vi.name] = np.full(shape, past, dtype)
            elif np.issubdtype(dtype, np.integer):
                feed[vi.name] = common.setdefault(vi.name, rng.integers(0, 10, shape).astype(dtype))
            else:
                cached = tuple(slice(0, past) if d in ("past_sequence", "capacity") else slice(None) for d in dims)
                # a fixed-capacity cache holds zeros after its `past` positions, as zoo.runtime's does at
                # first: both graphs' presents then hold the same there, not two draws of noise
                value = (rng.standard_normal(shape) * 0.5 * ("capacity" not in dims)).astype(dtype)
                value[cached] = common.setdefault(vi.name, (rng.standard_normal(shape) * 0.5).astype(dtype)[cached])
                feed[vi.name] = value
        feeds.append(feed)
        in_place.append(bound)

    def runner(session, feed, bound):  # -> a call running one step, and the step's outputs
        names = [o.name for o in session.get_outputs()]
        if not bound:
            call = functools.partial(session.run, None, feed)
            return call, call
        binding, buffers = session.io_binding(), {}
        for spec in session.get_inputs():
            value = ort.OrtValue.ortvalue_from_numpy(feed[spec.name].copy())
            binding.bind_ortvalue_input(spec.name, value)
            buffers[spec.name.replace("past_key_values", "present")] = value
        for name in names:
            if name in buffers:
                binding.bind_ortvalue_output(name, buffers[name])  # the present into its past's buffer
            else:
                binding.bind_output(name, "cpu")
        run = functools.partial(session._sess.run_with_iobinding, binding._iobinding, None)
        # The C call holds neither the Python binding nor the arrays bound to it, whose memory ONNX
        # Runtime reads and writes: they live as long as the call (freed once the runner returned, a
        # timed run read freed memory: the likely cause of a segmentation fault in the clean-clone CI).
        run.binding, run.buffers = binding, buffers

        def results():
            run()
            return binding.copy_outputs_to_cpu()  # in the graph's output order
        return run, results

    out = {"nodes": tuple(len(p.graph.node) for p in protos), "capacity": capacity if any(in_place) else None}
    for n in threads:
        runs, results = [], []
        for path, proto, feed, bound in zip((old, new), protos, feeds, in_place):
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = n, 1
            run, result = runner(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]), feed,
                                 bound)
            runs.append(run)
            results.append(dict(zip([o.name for o in proto.graph.output], result())))

        def common_part(a, b):  # over the positions both hold (a fixed-capacity present against a grown one)
            region = tuple(slice(0, m) for m in np.minimum(a.shape, b.shape))
            return float(np.abs(a[region] - b[region]).max())
        out["max_abs_diff"] = max(common_part(results[0][k], results[1][k]) for k in results[0])
        seconds = alternated(dict(enumerate(runs)), rounds, 0.5, steps)
        out[n] = (seconds[0] * 1e6, seconds[1] * 1e6)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m zoo.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exports", default="exports", help="folder holding exports/<model>/")
    parser.add_argument("--models", default="rnn,lstm,transformer,gan,vae,pixelcnn,wavenet,diffusion")
    parser.add_argument("--pixel-images", type=int, default=16, help="pixelcnn: images sampled together")
    parser.add_argument("--diffusion-images", type=int, default=16, help="diffusion: images sampled together")
    parser.add_argument("--samplers", default="ddim-10,ddim-20,ddim-50,ddim-100,ddpm-1000", help="diffusion samplers")
    parser.add_argument("--length", type=int, default=500, help="characters generated per stream")
    parser.add_argument("--eager-length", type=int, default=200, help="the same for the slow eager loop")
    parser.add_argument("--batches", default="1,32", help="recurrent models' batch sizes")
    parser.add_argument("--cached-batches", default="1,16", help="transformer batch sizes")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--audio-samples", type=int, default=16000, help="wavenet: samples per stream, cached")
    parser.add_argument("--recompute-samples", type=int, default=400, help="wavenet: the same, recomputing")
    parser.add_argument("--audio-batches", default="1,16", help="wavenet batch sizes")
    parser.add_argument("--graph-batches", default="1,64", help="image graphs' batch sizes")
    parser.add_argument("--records", default=str(RECORDS),
                        help="folder of the records: each model's figures go to RECORDS/<model>.json")
    parser.add_argument("--no-record", action="store_true", help="print the tables only")
    parser.add_argument("--readme", nargs="?", const=str(PAGE), metavar="FILE",
                        help=f"instead of measuring: write FILE's ({PAGE}'s) speed tables from the records")
    parser.add_argument("--profile", metavar="MODEL",
                        help="instead of timing: ONNX Runtime's profile of one pass of MODEL's main graph (the "
                             "image models), time per op type, at the first of --graph-batches")
    parser.add_argument("--wavenet-stages", metavar="RUN_DIR",
                        help="instead of generation: seconds per training step of each wavenet stage of the run "
                             "in RUN_DIR (e.g. runs/wavenet/default), alone, alternated in one process")
    parser.add_argument("--compare-graphs", nargs=2, metavar=("OLD", "NEW"),
                        help="instead of generation: one step of two ONNX graphs with the same inputs (a graph and "
                             "its rewrite), batch --compare-batch, alternated in one process, on 1 and 2 threads")
    parser.add_argument("--compare-batch", type=int, default=1, help="--compare-graphs: the batch size")
    parser.add_argument("--compare-capacity", type=int,
                        help="--compare-graphs: positions of a fixed-capacity cache (default: zoo.runtime's for "
                             "128 cached + 1)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.readme:
        changed = update_readme(args.readme, args.records)
        print(f"{args.readme}: {'tables rewritten' if changed else 'tables already match'} the records in {args.records}/")
        return
    if args.compare_graphs:
        result = compare_graphs(*args.compare_graphs, batch=args.compare_batch, capacity=args.compare_capacity)
        print(f"nodes: {result['nodes'][0]} -> {result['nodes'][1]}; outputs differ by at most {result['max_abs_diff']:.2g}")
        if result["capacity"]:
            print(f"(a fixed-capacity cache run in place, {result['capacity']} positions)")
        print("| threads | old us/step | new us/step | speed-up |\n|---:|---:|---:|---:|")
        for n in (1, 2):
            a, b = result[n]
            print(f"| {n} | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
        return
    if args.profile:
        batch = int(args.graph_batches.split(",")[0])
        rows = profile_graph(args.profile, Path(args.exports) / args.profile, batch)
        print(f"{args.profile}: one pass at batch {batch}, ONNX Runtime's profile, "
              f"{sum(r[2] for r in rows):,.0f} us of kernels\n")
        print("| op type | nodes | us per pass | share |\n|---|---:|---:|---:|")
        for op, count, us, share in rows:
            print(f"| {op} | {count} | {us:,.0f} | {100 * share:.1f}% |")
        return
    if args.wavenet_stages:
        print("| stage | seconds per training step | share of the two |\n|---|---:|---:|")
        for stage, seconds, share in bench_wavenet_stages(args.wavenet_stages):
            print(f"| {stage} | {seconds:.3f} | {100 * share:.0f}% |")
        return
    batches = [int(b) for b in args.batches.split(",")]
    command = os.environ.get("ZOO_COMMAND") or " ".join(["python -m zoo.bench", *(argv if argv is not None else sys.argv[1:])])
    titles = {
        "recurrent": f"Recurrent text generation, characters per second, {args.length} characters per stream",
        "cached": f"Transformer generation, tokens per second, {args.new_tokens} new tokens after a "
                  f"{args.prompt_tokens}-token prompt, greedy",
        "graphs": "Image graphs, one pass, images per second: the export's graph in ONNX Runtime vs the Keras "
                  "function it was exported from (median of alternated rounds)",
        "pixels": f"PixelCNN sampling, seconds to draw {args.pixel_images} images pixel by pixel (784 network runs)",
        "diffusion": f"Diffusion sampling, images per second for one batch of {args.diffusion_images} "
                     "(classifier-free guidance as in the manifest)",
        "audio": "WaveNet generation, audio samples per second (8,000 a second is real time), sampling at "
                 "temperature 1 included",
    }
    every = {tid: [] for tid in titles}
    names = args.models.split(",")
    progress = Progress(len(names), "benchmarking model")  # each takes minutes
    for name in names:
        folder = Path(args.exports) / name
        progress.update()
        if not (folder / "manifest.json").exists():
            print(f"skipping {name}: no export in {folder} (make train-{name})")
            continue
        kind = load(folder, verify=False).runtime["kind"]
        tables = {}
        if kind in ("image-generator", "image-diffusion", "image-autoregressive"):
            tables["graphs"] = bench_graphs(name, folder, [int(b) for b in args.graph_batches.split(",")])
        if kind == "image-diffusion":
            tables["diffusion"] = bench_diffusion(name, folder, args.diffusion_images, args.samplers.split(","))
        elif kind == "image-autoregressive":
            tables["pixels"] = bench_pixels(name, folder, args.pixel_images)
        elif kind == "audio-generator":
            tables["audio"] = bench_audio(name, folder, args.audio_samples, args.recompute_samples,
                                          [int(b) for b in args.audio_batches.split(",")])
        elif kind == "text-cached":
            tables["cached"] = bench_cached(name, folder, args.prompt_tokens, args.new_tokens,
                                            [int(b) for b in args.cached_batches.split(",")])
        elif kind == "text-recurrent":
            tables["recurrent"] = bench_text(name, folder, args.length, batches, args.eager_length)
        for tid, rows in tables.items():
            every[tid] += rows
        if not args.no_record:
            print(f"wrote {write_record(args.records, name, folder, {t: (titles[t], r) for t, r in tables.items()}, command)}")
    progress.close()
    for tid, rows in every.items():
        print_table(titles[tid], TABLES[tid][0], rows, column=TABLES[tid][1])


def print_table(title, unit, rows, column="batch"):
    if not rows:
        return
    print(f"\n{title} ({os.cpu_count()} CPU cores):\n")
    print(f"| model | engine | {column} | {unit} |")
    print("|---|---|---:|---:|")
    for name, engine, batch, value in rows:
        print(f"| {name} | {engine} | {batch} | {value:,.1f} |" if value < 100 else f"| {name} | {engine} | {batch} | {value:,.0f} |")


if __name__ == "__main__":
    main()
