"""zoo.runtime: numpy + onnxruntime only; checksums; checked inputs; sampling."""

import json
import shutil
import textwrap

import numpy as np
import pytest

from tests.conftest import RECURRENT, TEXT_MODELS, run_python
from zoo import runtime
from zoo.runtime.audio import generate
from zoo.runtime.core import ExportFileError
from zoo.runtime.images import sample_images

BLOCK_TENSORFLOW = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"tensorflow", "keras", "tf2onnx", "tensorflow_datasets", "tf_keras"}:
                raise ImportError("blocked in this test: " + name)
    sys.meta_path.insert(0, Block())
""")


def run_runtime_cli(*argv):
    """`python -m zoo.runtime ARGV` in a fresh interpreter that cannot import TensorFlow or Keras.

    Returns its stdout lines; the last is `LOADED [...]`, the TensorFlow-family modules it loaded.
    """
    code = BLOCK_TENSORFLOW + textwrap.dedent(f"""
        import runpy
        sys.argv = ["zoo.runtime", *{list(map(str, argv))!r}]
        try:
            runpy.run_module("zoo.runtime", run_name="__main__")
        except SystemExit as e:
            assert e.code == 0, e.code
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx"))
        print("LOADED", loaded)
    """)
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_runtime_samples_without_tensorflow(name, trained):
    export = trained(name)["export"]
    lines = run_runtime_cli("sample", export, "--length", "40", "--seed", "1")
    assert lines[-1] == "LOADED []"
    prompt = json.loads((export / "manifest.json").read_text())["runtime"]["sample_defaults"]["prompt"]
    assert lines[0].startswith(prompt)


def test_runtime_source_imports_no_tensorflow():
    from pathlib import Path

    for path in Path(runtime.__file__).parent.glob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]):
                assert words[1].split(".")[0] not in ("tensorflow", "keras", "tf2onnx"), (path, line)


@pytest.mark.parametrize("name", RECURRENT)
def test_onnx_stepping_equals_keras_on_the_whole_sequence(name, trained):
    model, export = trained(name)["model"], runtime.load(trained(name)["export"])
    tokens = np.random.default_rng(2).integers(0, model.vocab_size, (2, 9)).astype(np.int32)
    want = np.asarray(model(tokens)[0])
    feed = {n: np.zeros((2, s), np.float32) for n, s in model.state_sizes}
    got = []
    for t in range(tokens.shape[1]):
        out = export.run("step", {"tokens": tokens[:, t : t + 1], **feed})
        got.append(out["logits"])
        feed = {n: out[f"next_{n}"] for n, _ in model.state_sizes}
    np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=1e-4)


def test_sampling_is_seeded_and_batched(trained):
    export = runtime.load(trained("rnn")["export"])
    prompt = export.runtime["sample_defaults"]["prompt"]
    a = runtime.sample_text(export, prompt, length=60, seed=5, batch=3)
    b = runtime.sample_text(export, prompt, length=60, seed=5, batch=3)
    c = runtime.sample_text(export, prompt, length=60, seed=6, batch=3)
    assert a == b and a != c and len(a) == 3
    assert all(len(t) == len(prompt) + 60 for t in a)
    greedy = runtime.sample_text(export, prompt, length=30, temperature=0, seed=1, batch=2)
    assert greedy[0] == greedy[1]  # temperature 0 is argmax: no randomness left


def test_sample_logits_follows_the_softmax_and_top_k():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 20000))
    counts = np.bincount(runtime.sample_logits(logits, 1.0, 0, rng), minlength=4) / 20000
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.015)
    top2 = np.bincount(runtime.sample_logits(logits, 1.0, 2, rng), minlength=4) / 20000
    np.testing.assert_allclose(top2, [0.625, 0.375, 0, 0], atol=0.015)
    cold = np.bincount(runtime.sample_logits(logits, 0.25, 0, rng), minlength=4) / 20000
    assert cold[0] > 0.85  # p^4 renormalised: 0.874
    assert (runtime.sample_logits(logits[:3], 0, 0, rng) == 0).all()


def test_bad_inputs_get_clear_errors(trained):
    export = runtime.load(trained("rnn")["export"])
    state = np.zeros((1, 16), np.float32)
    with pytest.raises(ValueError, match="dtype int32"):
        export.run("step", {"tokens": np.zeros((1, 3), np.float32), "state": state})
    with pytest.raises(ValueError, match="rank 2"):
        export.run("step", {"tokens": np.zeros((3,), np.int32), "state": state})
    with pytest.raises(ValueError, match="axis 1 must be 16"):
        export.run("step", {"tokens": np.zeros((1, 3), np.int32), "state": np.zeros((1, 5), np.float32)})
    with pytest.raises(ValueError, match=r"missing \['state'\]"):
        export.run("step", {"tokens": np.zeros((1, 3), np.int32)})
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        runtime.sample_text(export, "\u00e9\u00e8", length=3)
    with pytest.raises(ValueError, match="at least one character"):
        runtime.sample_text(export, "", length=3)


def test_checksum_mismatch_and_missing_files(trained, tmp_path):
    folder = tmp_path / "rnn"
    shutil.copytree(trained("rnn")["export"], folder)
    runtime.load(folder)  # intact
    with open(folder / "step.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ExportFileError, match="step.onnx does not match its sha256"):
        runtime.load(folder)
    runtime.load(folder, verify=False)  # the user can opt out
    (folder / "step.onnx").unlink()
    with pytest.raises(ExportFileError, match="missing"):
        runtime.load(folder)
    with pytest.raises(ExportFileError, match="manifest.json not found"):
        runtime.load(tmp_path / "nowhere")


def test_runtime_cli_errors(trained, tmp_path, capsys):
    from zoo.runtime.__main__ import main

    export = str(trained("lstm")["export"])
    assert main(["sample", export, "--length", "5", "--prompt", "\u00e9"]) == 2
    assert "not in the model's vocabulary" in capsys.readouterr().err
    assert main(["sample", str(tmp_path)]) == 1
    assert main(["info", export]) == 0
    assert '"model": "lstm"' in capsys.readouterr().out


@pytest.mark.parametrize("name, argv, message", [
    ("gan", ["--per-label", "0"], "error: per_label must be >= 1, got 0"),
    ("wavenet", ["--seconds", "0"], "error: seconds must be a positive number (the longest clip), got 0.0"),
    ("wavenet", ["--digits", "1,x"], "error: digits must be integers separated by commas, got '1,x'"),
])
def test_runtime_cli_refuses_zero_counts_instead_of_using_defaults(name, argv, message, trained, tmp_path, capsys):
    from zoo.runtime.__main__ import main

    export = trained(name)["export"]
    assert main(["sample", str(export), *argv, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "out").exists()


ALL_MODELS = ["rnn", "lstm", "transformer", "gan", "vae", "pixelcnn", "wavenet", "diffusion"]


def _valid_inputs(export, graph):
    """The export's own test data set for `graph`: inputs the graph takes."""
    from zoo.export import read_test_inputs

    return read_test_inputs(export.path / export.graph(graph)["test_data"])


def _mutate(inputs, specs, rng):
    """One mistake a user could make: wrong dtype, rank, fixed or shared size, value, or a missing,
    extra or non-array input."""
    inputs = dict(inputs)
    key = list(inputs)[int(rng.integers(len(inputs)))]
    value, spec = inputs[key], specs[key]
    kind = int(rng.integers(9))
    if kind == 0:
        inputs[key] = value.astype(np.float64 if value.dtype.kind != "f" else np.int32)
    elif kind == 1:
        inputs[key] = value[None]
    elif kind == 2 and value.ndim:
        inputs[key] = np.concatenate([value, value], axis=value.ndim - 1)  # a fixed or shared size changed
    elif kind == 3 and value.ndim:
        inputs[key] = np.concatenate([value, value], axis=0)  # one input's batch differs
    elif kind == 4 and "range" in spec and value.size:
        bad = value.copy().reshape(-1)
        bad[int(rng.integers(bad.size))] = spec["range"][1] + int(rng.integers(0, 3)) if rng.random() < 0.5 else -1
        inputs[key] = bad.reshape(value.shape)
    elif kind == 4 and "interval" in spec and value.size:  # e.g. an image of 0..255 where [0, 1] is taken
        lo, hi = spec["interval"]
        bad = value.copy().reshape(-1)
        bad[int(rng.integers(bad.size))] = [hi + 254.0, hi + 1e-3, lo - 1.0][int(rng.integers(3))]
        inputs[key] = bad.reshape(value.shape)
    elif kind == 5 and value.dtype.kind == "f" and value.size:
        bad = value.copy().reshape(-1)
        bad[int(rng.integers(bad.size))] = [np.nan, np.inf, -np.inf][int(rng.integers(3))]
        inputs[key] = bad.reshape(value.shape)
    elif kind == 6:
        del inputs[key]
    elif kind == 7:
        inputs["extra"] = value
    else:
        inputs[key] = value.tolist()
    return inputs


def test_a_thousand_wrong_calls_end_in_value_errors_not_onnxruntime_errors(trained):
    """Randomised mistakes against every graph of every export: each call either runs or raises a
    ValueError naming the problem; none reaches the user as a raw onnxruntime error."""
    rng = np.random.default_rng(0)
    cases = []
    for name in ALL_MODELS:
        export = runtime.load(trained(name)["export"])
        for graph in export.manifest["graphs"]:
            specs = {s["name"]: s for s in export.graph(graph)["inputs"]}
            cases.append((export, graph, _valid_inputs(export, graph), specs))
    outcomes = {"ran": 0, "ValueError": 0}
    for i in range(1000):
        export, graph, inputs, specs = cases[i % len(cases)]
        try:
            export.run(graph, _mutate(inputs, specs, rng))
            outcomes["ran"] += 1
        except ValueError as e:
            assert "onnxruntime" not in type(e).__module__ and str(e).count("\n") == 0
            outcomes["ValueError"] += 1
    assert outcomes["ValueError"] > 700, outcomes  # most mistakes are caught (some, e.g. float64 -> int32 of a valid
    # index, are no mistake at all)


def test_out_of_range_inputs_name_the_input_and_its_range(trained):
    export = runtime.load(trained("diffusion")["export"])
    inputs = _valid_inputs(export, "denoiser")
    with pytest.raises(ValueError, match=r"^input 'label' of graph 'denoiser' takes values 0..10, got values from"):
        export.run("denoiser", dict(inputs, label=np.full_like(inputs["label"], 11)))
    with pytest.raises(ValueError, match=r"^input 't' of graph 'denoiser' takes values 0..49"):
        export.run("denoiser", dict(inputs, t=np.full_like(inputs["t"], 50)))
    with pytest.raises(ValueError, match="^input 'x_t' of graph 'denoiser' holds NaN or infinite values$"):
        export.run("denoiser", dict(inputs, x_t=np.full_like(inputs["x_t"], np.nan)))
    text = runtime.load(trained("rnn")["export"])
    inputs = _valid_inputs(text, "step")
    with pytest.raises(ValueError, match=r"^input 'tokens' of graph 'step' takes values 0\.\.\d+, got values from"):
        text.run("step", dict(inputs, tokens=inputs["tokens"] + 1000))
    for name, graph in (("vae", "encoder"), ("pixelcnn", "network")):  # binary pixels, not 0..255
        images = runtime.load(trained(name)["export"])
        inputs = _valid_inputs(images, graph)
        with pytest.raises(ValueError, match=rf"^input 'image' of graph '{graph}' takes values in \[0, 1\], "
                                             r"got values from 0 to 255$"):
            images.run(graph, dict(inputs, image=inputs["image"] * 255))
        images.run(graph, dict(inputs, image=np.full_like(inputs["image"], 0.5)))  # grey levels: within


def test_progress_line_is_one_line_and_quiet_off_a_terminal(capsys):
    import io

    from zoo.runtime.core import Progress

    stream = io.StringIO()
    with Progress(4, "steps", stream=stream) as progress:
        for _ in range(4):
            progress.update()
    text = stream.getvalue()
    assert text.endswith("steps: 100% (4/4), 0 s \n") and text.count("\n") == 1
    with Progress(4, "quiet") as progress:  # stderr is captured here, not a terminal
        progress.update(4)
    assert capsys.readouterr().err == ""


def test_tampering_with_any_kind_of_export_file_is_refused(trained, tmp_path):
    """One changed byte in any file the manifest lists (ONNX graph, Keras model, SavedModel, test data,
    samples, card) and a missing or unreadable manifest: `load` refuses, naming the file."""
    import shutil

    source = trained("wavenet")["export"]
    files = json.loads((source / "manifest.json").read_text())["files"]
    kinds = {}
    for rel in files:  # one file of each kind: by folder and ending
        kinds.setdefault((rel.split("/")[0] if "/" in rel else "", rel.rsplit(".", 1)[-1]), rel)
    assert {ending for _, ending in kinds} >= {"onnx", "keras", "md", "pb", "wav"} and len(kinds) >= 7
    for rel in kinds.values():
        export = tmp_path / rel.replace("/", "_")
        shutil.copytree(source, export)
        data = bytearray((export / rel).read_bytes())
        data[len(data) // 2] ^= 0x01
        (export / rel).write_bytes(bytes(data))
        with pytest.raises(ExportFileError, match=f"{rel} does not match its sha256"):
            runtime.load(export)
    export = tmp_path / "bad-manifest"
    shutil.copytree(source, export)
    (export / "manifest.json").write_text("{ not json")
    with pytest.raises(ExportFileError, match="manifest.json is not valid JSON"):
        runtime.load(export)


SAMPLE_ONE = {  # model -> a small draw through its kind's sampler
    "rnn": lambda e: runtime.sample_text(e, e.runtime["vocabulary"][-1], length=5),
    "transformer": lambda e: runtime.sample_text(e, e.runtime["vocabulary"][-1], length=20),  # past the context
    "gan": lambda e: sample_images(e, "1", 1),
    "vae": lambda e: sample_images(e, "1", 1),
    "pixelcnn": lambda e: sample_images(e, "1", 1),
    "diffusion": lambda e: sample_images(e, "1", 1, steps=2),
    "wavenet": lambda e: generate(e, "1", seconds=0.05),
}


@pytest.mark.parametrize("name", list(SAMPLE_ONE))
def test_each_kind_samples_from_the_runtime_info_it_declares_and_refuses_an_export_without_it(name, trained, tmp_path):
    """core.RUNTIME_KEYS lists what each kind's sampler reads: an export whose runtime info holds
    only those keys samples; one that lacks any (written before the sampler needed it), holds a
    layout the sampler does not run (core.RUNTIME_VALUES), or is of another format, is refused at
    load with a message naming what is wrong and what to do."""
    from zoo.runtime.__main__ import main
    from zoo.runtime.core import FORMAT, RUNTIME_KEYS, RUNTIME_VALUES, ExportFormatError

    folder = shutil.copytree(trained(name)["export"], tmp_path / name)
    manifest = json.loads((folder / "manifest.json").read_text())
    info = manifest["runtime"]
    declared = RUNTIME_KEYS[info["kind"]]

    def write(runtime_info, fmt=FORMAT):
        (folder / "manifest.json").write_text(json.dumps(dict(manifest, runtime=runtime_info, format=fmt)))

    write({k: v for k, v in info.items() if k in declared or k == "kind"})
    SAMPLE_ONE[name](runtime.load(folder))  # a KeyError here: the sampler reads a key RUNTIME_KEYS lacks
    for key in declared:
        write({k: v for k, v in info.items() if k != key})
        with pytest.raises(ExportFormatError, match=f"lacks '{key}', which this runtime's {info['kind']} sampler "
                                                    f"reads. Export it again with this version"):
            runtime.load(folder, verify=False)
    for key, known in RUNTIME_VALUES.get(info["kind"], {}).items():  # a layout this runtime does not run
        write(dict(info, **{key: "other"}))
        with pytest.raises(ExportFormatError, match=f"runtime info's {key} is 'other', this runtime's {info['kind']} "
                                                    f"sampler runs {known[0]!r}.* Export it again"):
            runtime.load(folder, verify=False)
    write(info, fmt="zoo-export/0")
    with pytest.raises(ExportFormatError, match="its format is 'zoo-export/0', this runtime reads 'zoo-export/1'"):
        runtime.load(folder)
    assert main(["sample", str(folder), "--out", str(tmp_path / "out")]) == 1  # the CLI says so, exits 1


def test_samplers_refuse_bad_arguments_in_one_line_before_allocating(trained):
    """Counts, lengths, steps and numbers a client could send: each a one-line ValueError naming the
    argument, huge ones refused by the call-size bound before any array is made."""
    from zoo.runtime import audio
    from zoo.runtime.images import sample_images
    from zoo.runtime.text import sample_text

    gan, diffusion = runtime.load(trained("gan")["export"]), runtime.load(trained("diffusion")["export"])
    pixelcnn, lstm = runtime.load(trained("pixelcnn")["export"]), runtime.load(trained("lstm")["export"])
    transformer, wavenet = runtime.load(trained("transformer")["export"]), runtime.load(trained("wavenet")["export"])
    prompt = lstm.runtime["vocabulary"][:3]
    cases = [
        (lambda: sample_images(gan, "1", per_label=0), r"^per_label must be >= 1, got 0$"),
        (lambda: sample_images(gan, "1", per_label=2.5), r"^per_label must be a whole number, got 2.5$"),
        (lambda: sample_images(gan, "1", per_label=True), r"^per_label must be a whole number"),
        (lambda: sample_images(gan, "1", per_label=10**12), r"^graph 'generator' at batch 1000000000000 needs .* over "
                                                             r"this runtime's limit of 1.0 GiB a call"),
        (lambda: sample_images(pixelcnn, "1", per_label=10**9), r"^graph 'network' at batch 1000000000, rows \d+ needs"),
        (lambda: sample_images(gan, "1", seed=-1), r"^seed must be >= 0, got -1$"),
        (lambda: sample_images(gan, [1.5]), r"^labels must be integers in 0..9, got \[1.5\]$"),
        (lambda: sample_images(gan, [10**30]), r"^labels must be in 0..9"),
        (lambda: sample_images(diffusion, "1", steps=0), r"^steps must be from 1 to \d+, got 0$"),
        (lambda: sample_images(diffusion, "1", steps=10**9), r"^steps must be from 1 to \d+"),
        (lambda: sample_images(diffusion, "1", eta=float("nan")), r"^eta must be a finite number >= 0, got nan$"),
        (lambda: sample_images(diffusion, "1", guidance="2"), r"^guidance must be a number, got '2'$"),
        (lambda: sample_images(diffusion, "1", sampler="euler"), r"^sampler must be 'ddim' or 'ddpm', got 'euler'$"),
        (lambda: sample_images(diffusion, "1", per_label=10**8), r"^graph 'denoiser' at batch 200000000 needs"),
        (lambda: sample_text(lstm, prompt, length=-1), r"^length must be >= 0, got -1$"),
        (lambda: sample_text(lstm, prompt, length=1.0), r"^length must be a whole number, got 1.0$"),
        (lambda: sample_text(lstm, prompt, batch=0), r"^batch must be >= 1, got 0$"),
        (lambda: sample_text(lstm, prompt, batch=10**9), r"^graph 'step' at batch 1000000000, time 3 needs"),
        (lambda: sample_text(lstm, prompt, length=10**12), r"^1 x 1000000000003 characters need more than"),
        (lambda: sample_text(lstm, prompt, temperature=float("inf")), r"^temperature must be a finite number >= 0"),
        (lambda: sample_text(lstm, prompt, top_k=-3), r"^top_k must be >= 0, got -3$"),
        (lambda: sample_text(lstm, None), r"^the prompt must be a string of at least one character, got None$"),
        (lambda: sample_text(lstm, prompt, precision=["int8"]), r"^precision must be a string"),
        (lambda: sample_text(transformer, prompt, batch=10**8), r"^graph 'decoder' at batch 100000000"),
        (lambda: audio.generate(wavenet, "7", seconds=float("nan")), r"^seconds must be a finite number, got nan$"),
        (lambda: audio.generate(wavenet, "7", 0.01, temperature=-1), r"^temperature must be a finite number >= 0, got -1$"),
        (lambda: audio.generate(wavenet, [7] * 10**6, seconds=0.01), r"^graph 'step' at batch 1000000 needs"),
        (lambda: audio.generate(wavenet, "7", 0.01, seed=1.5), r"^seed must be a whole number, got 1.5$"),
        (lambda: audio.resynthesize(wavenet, np.zeros((2, 100), np.float32), 3), r"^audio must be a non-empty 1-D"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value)


def test_the_call_size_bound_counts_inputs_outputs_and_the_largest_intermediate(trained, monkeypatch):
    export = runtime.load(trained("gan")["export"])
    graph = export.graph("generator")
    assert graph["intermediates"] and all(isinstance(i["bytes"], int) for i in graph["intermediates"])
    per_image = 4 * (export.runtime["latent_dim"] + 1 + 28 * 28)  # z, label, image
    largest = max(i["bytes"] * int(np.prod([d for d in i["shape"] if isinstance(d, int)])) for i in graph["intermediates"])
    assert largest > 0
    fits = 2**20 // (per_image + largest)
    small = runtime.load(trained("gan")["export"], max_call_bytes=2**20)
    small.check_call("generator", {"batch": fits})
    with pytest.raises(ValueError, match=rf"^graph 'generator' at batch {2**20 // per_image} needs .* over this "
                                         r"runtime's limit of 1.0 MiB a call"):
        small.check_call("generator", {"batch": 2**20 // per_image})  # inputs and outputs alone would fit
    monkeypatch.setenv("ZOO_MAX_CALL_BYTES", str(2**20))
    assert runtime.load(trained("gan")["export"]).max_call_bytes == 2**20
    for bad in ("1GiB", "0", "-5", "1e9"):  # a limit the runtime cannot read is one line, not int()'s error
        monkeypatch.setenv("ZOO_MAX_CALL_BYTES", bad)
        with pytest.raises(ValueError, match=r"^\$ZOO_MAX_CALL_BYTES must be a whole number of bytes of at least 1"):
            runtime.load(trained("gan")["export"])
    monkeypatch.setenv("ZOO_MAX_CALL_BYTES", str(2**20))
    with pytest.raises(ValueError, match=r"^max_call_bytes must be >= 1, got 0"):
        runtime.load(trained("gan")["export"], max_call_bytes=0)
    feed = {"z": np.zeros((fits + 1, export.runtime["latent_dim"]), np.float32), "label": np.zeros(fits + 1, np.int32)}
    with pytest.raises(ValueError, match=r"^graph 'generator' at batch \d+ needs"):
        small.run("generator", feed)
    small.run("generator", {k: v[:fits] for k, v in feed.items()})


def test_cached_decoder_positions_are_checked_before_onnxruntime(trained):
    export = runtime.load(trained("transformer")["export"])
    info = export.runtime

    def feed(positions, capacity=8):
        positions = np.array(positions, np.int64)
        pasts = {name: np.zeros((len(positions), info["num_heads"], capacity, info["head_dim"]), np.float32)
                 for name in runtime.text.cache_names(info)}
        return {"input_ids": np.zeros_like(positions), "position_ids": positions, **pasts}

    for positions, capacity, message in (
            ([[8]], 8, r"^input 'position_ids' goes up to 8, past the cache's capacity of 8 positions"),
            ([[0, 2]], 8, r"^input 'position_ids' must run on by one in each row"),
            ([[3, 4], [3, 4]], 8, r"^a call that adds several positions after cached ones takes one sequence"),
            ([[0]], info["max_context"] + 1, r"holds \d+ positions, more than the model's context")):
        for precision in ("fp32", "int8"):
            with pytest.raises(ValueError, match=message):
                export.run("decoder", feed(positions, capacity), precision=precision)
    export.run("decoder", feed([[0, 1], [0, 1]]))  # a prefill of two sequences from position 0
    export.run("decoder", feed([[3], [5]]))  # one new position each after cached ones
    export.run("decoder", feed([[0, 2]]), precision="standard")  # the standard graph has no such rule


def test_empty_axes_are_refused(trained):
    export = runtime.load(trained("pixelcnn")["export"])
    inputs = _valid_inputs(export, "network")
    with pytest.raises(ValueError, match=r"^input 'image' axis 0 \(batch\) must be at least 1, got shape \(0,"):
        export.run("network", {k: v[:0] for k, v in inputs.items()})
