"""The model card (an export's README.md) and the front matter model hubs read."""

import json
from pathlib import Path

from zoo import registry
from zoo.runtime.core import INT8_CPU_FLAGS
from zoo.export.convert import ONNXRUNTIME_FOR_OPSET, OPSET, int8_portability


# Hub metadata (the YAML front matter model hubs read). The code is Apache-2.0 (LICENSE); each card
# also names its training data's license (DATA_LICENSES) and what it means for the weights.
LICENSE = "apache-2.0"

# The hub's task of each kind; a conditional image model gets none (no hub task is "class -> image"),
# and a tag saying what it is instead.
PIPELINE_TAGS = {"text-cached": "text-generation", "text-recurrent": "text-generation",
                 "image-generator": "unconditional-image-generation",
                 "image-autoregressive": "unconditional-image-generation",
                 "image-diffusion": "unconditional-image-generation"}  # no hub task fits digit -> audio

# Numbers in a manifest's metrics that are settings or counts of an evaluation, not measures of the
# model: the card's table shows them, the hub's metric list does not.
SETTINGS = {"samples", "test_images", "test_chars_scored", "iwae_k", "iwae_images", "binarization_seed",
            "classifier_test_accuracy", "eval_guidance", "eval_rows", "test_clips", "test_samples",
            "generated_clips", "resynthesis_clips"}

# The training data's license, from each dataset's own documentation (docs/license.md says where).
DATA_LICENSES = {
    "mnist": ("CC BY-SA 3.0 (Creative Commons Attribution-Share Alike 3.0); Yann LeCun and Corinna Cortes hold "
              "the copyright of MNIST, a derivative of NIST's data"),
    "fashion_mnist": "MIT, Copyright 2017 Zalando SE",
    "tiny_shakespeare": ("none stated by TFDS or char-rnn; the text is Shakespeare's plays, which are in the "
                         "public domain"),
    "spoken_digit": "CC BY-SA 4.0 (Creative Commons Attribution-ShareAlike 4.0), the Free Spoken Digit Dataset's",
}

# What each kind of model is for, and what it is not.
USES = {
    "text": ("Sampling Shakespeare-like text character by character, learning and teaching how character "
             "models, their state or cache and their export work, a base to fine-tune on another text "
             "(notebooks/text.ipynb).",
             "It models characters of one megabyte of Shakespeare: its text has the look of a play and "
             "little sense, it knows only the 65 characters of its vocabulary, and it has no notion of truth or "
             "safety. English outside that style is out of its reach."),
    "image": ("Generating 28x28 grayscale images of its dataset's ten classes, comparing generative "
              "families on one footing, a base to fine-tune on other 28x28 data (the notebooks).",
              "Its images are 28x28 and grayscale, of ten classes only; its FID is measured on the zoo's own "
              "classifier's features, not Inception's, so it compares within the zoo, not with papers."),
    "audio": ("Generating spoken English digits (0-9) at 8 kHz, re-synthesising recordings from their "
              "log-mel frames, learning how a mel prior and a WaveNet vocoder work together.",
              "It says ten words, in voices like the five speakers it trained on; it is not a text-to-speech "
              "system. Its audio is 8 kHz and noisier than the recordings it learned from."),
}


def card_metrics(manifest: dict) -> dict:
    """The measured numbers of a manifest that a card shows: {name: value}."""
    return {k: v for k, v in (manifest.get("metrics") or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "eval_seconds"}


def hub_metrics(manifest: dict) -> dict:
    """The card's numbers that measure the model (no counts, settings, speeds or the judge's own score)."""
    return {k: v for k, v in card_metrics(manifest).items()
            if k not in SETTINGS and not k.endswith(("_seconds", "_per_second"))}


NOISE_INPUTS = {"z", "x_t"}  # the inputs a sampler fills with N(0, I) noise


def _kind(manifest: dict) -> str:
    return (manifest.get("runtime") or {}).get("kind", "")


def _family(kind: str) -> str:
    return kind.split("-")[0] if kind.split("-")[0] in USES else "image"


def front_matter(manifest: dict) -> str:
    """YAML front matter for model hubs, from the manifest: license, library, tags, dataset,
    pipeline tag (none for a class-conditional image model: tagged as such), and the measured test
    metrics (`metrics` names them, `model-index` holds the values). Strings are JSON-quoted, which
    YAML reads as they are."""
    q = json.dumps
    kind = _kind(manifest)
    runtime = manifest.get("runtime") or {}
    dataset = (manifest.get("dataset") or {}).get("name") or (manifest.get("config") or {}).get("dataset", "")
    metrics = hub_metrics(manifest)
    conditional = kind.startswith("image") and runtime.get("conditional")
    tags = ["zoo", manifest["model"], "onnx", "tensorflow", "keras", kind]
    tags += ["class-conditional-image-generation"] if conditional else []
    tags += ["audio-generation"] if kind.startswith("audio") else []
    lines = ["---", f"license: {LICENSE}", f"library_name: {q('keras')}", "tags:"]
    lines += [f"- {q(t)}" for t in tags if t]
    if dataset:
        lines += ["datasets:", f"- {q(dataset)}"]
    task = None if conditional else PIPELINE_TAGS.get(kind)
    if task:
        lines.append(f"pipeline_tag: {q(task)}")
    if metrics:
        lines += ["metrics:"] + [f"- {q(k)}" for k in metrics]
        task = task or ("class-conditional-image-generation" if conditional
                        else "audio-generation" if kind.startswith("audio") else kind)
        lines += ["model-index:", f"- name: {q('zoo-' + manifest['model'])}", "  results:",
                  f"  - task: {{type: {q(task)}}}",
                  f"    dataset: {{name: {q(dataset)}, type: {q(dataset)}, split: {q('test')}}}",
                  "    metrics:"]
        lines += [f"    - {{type: {q(k)}, name: {q(k)}, value: {json.dumps(v)}}}" for k, v in metrics.items()]
    return "\n".join(lines + ["---", ""])


def how_to_use(manifest: dict) -> list:
    """Markdown lines: sampling from the command line, from zoo.runtime, from plain onnxruntime (the
    first graph's feed, from the manifest) and loading the Keras model to fine-tune it."""
    name, runtime = manifest["model"], manifest.get("runtime") or {}
    kind, defaults = runtime.get("kind", ""), runtime.get("sample_defaults") or {}
    options = " ".join(f"--{k.replace('_', '-')} {json.dumps(v) if isinstance(v, str) and ' ' in v else v}"
                       for k, v in defaults.items() if k not in ("out", "vocoder"))
    lines = ["## How to use", "", "From the command line (`pip install .` in the zoo: numpy and onnxruntime, no "
             "TensorFlow):", "", "```sh", f"python -m zoo.runtime sample exports/{name} {options}".rstrip(), "```",
             "", "From Python, with the zoo's runtime:", "", "```python", "from zoo.runtime import load"]
    if kind.startswith("text"):
        lines += ["from zoo.runtime import sample_text", "", f'export = load("exports/{name}")',
                  f'print(sample_text(export, prompt={json.dumps(defaults.get("prompt", "ROMEO:"))}, length=200, '
                  f'temperature={defaults.get("temperature", 0.8)}, seed=1)[0])']
    elif kind.startswith("audio"):
        lines += ["from zoo.runtime.audio import generate", "", f'clips = generate(load("exports/{name}"), "3,7", '
                  "seed=0)   # a clip per digit, 8 kHz float samples"]
    else:
        lines += ["from zoo.runtime.images import sample_images", "",
                  f'images, labels = sample_images(load("exports/{name}"), "0,1,2", per_label=4, seed=0)'
                  "   # uint8 [labels, per_label, 28, 28]"]
    spec = next(iter(manifest["graphs"].values()))
    feed = []
    for t in spec["inputs"]:  # one row; symbolic axes of size 1; noise for z and x_t, else zeros (a loop's start)
        shape = tuple(d if isinstance(d, int) else 1 for d in t["shape"])
        value = (f"rng.standard_normal({shape}).astype(np.{t['dtype']})" if t["name"] in NOISE_INPUTS
                 else f"np.zeros({shape}, np.{t['dtype']})")
        feed.append(f'    "{t["name"]}": {value},')
    lines += ["```", "", "With plain onnxruntime and numpy, no zoo code: each graph is one deterministic step (noise, "
              "state and caches are inputs; the table below gives every input's dtype, shape and valid values). "
              f"One call of `{spec['onnx']}`:", "", "```python", "import numpy as np", "import onnxruntime as ort", "",
              f'session = ort.InferenceSession("exports/{name}/{spec["onnx"]}")', "rng = np.random.default_rng(0)",
              "feed = {", *feed, "}", "outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))",
              "```", "",
              "With Keras, to fine-tune (the `train` extra; `notebooks/` has one notebook per family):", "",
              "```python", "from zoo.models import load_model", "",
              f'model = load_model("exports/{name}/model.keras")   # safe mode; compile, then fit on your data',
              "```", ""]
    return lines


def graphs_table(manifest: dict) -> list:
    """Markdown lines: every graph's inputs and outputs (name, dtype, shape, valid values), from the manifest."""
    lines = ["## Inputs and outputs", "", "| graph | | name | dtype | shape | values |", "|---|---|---|---|---|---|"]
    for graph, spec in manifest["graphs"].items():
        for side in ("inputs", "outputs"):
            for t in spec[side]:
                values = (f"{t['range'][0]} to {t['range'][1] - 1}" if "range" in t
                          else f"[{t['interval'][0]}, {t['interval'][1]}]" if "interval" in t else "")
                shape = "[" + ", ".join(str(d) for d in t["shape"]) + "]"
                lines.append(f"| `{spec['onnx']}` | {side[:-1]} | `{t['name']}` | {t['dtype']} | {shape} | {values} |")
    return lines + [""]


def uses_and_limits(manifest: dict) -> list:
    uses, limits = USES[_family(_kind(manifest))]
    return ["## Intended uses and limitations", "", f"Uses: {uses}", "", f"Limitations: {limits}", ""]


def license_section(manifest: dict) -> list:
    dataset = (manifest.get("dataset") or {}).get("name", "")
    data = DATA_LICENSES.get(dataset, "not recorded here")
    return ["## License", "", "The zoo's code is Apache-2.0. The weights were trained on TFDS `"
            f"{dataset}`, whose license is {data}. A share-alike data license may reach models trained on the "
            "data: credit the dataset, and share adaptations of these weights under its terms where it asks it "
            "(the zoo's docs/license.md).", ""]


def _results(module, manifest: dict) -> list:
    """Markdown lines: the test metrics, what they mean (the model's EVAL_NOTE), the precision variants."""
    lines, metrics = [], manifest["metrics"]
    shown = card_metrics(manifest)
    if shown:
        lines += ["## Results", "", f"On the test split, measured by `{metrics.get('eval_command')}`:", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v:,} |" for k, v in shown.items()]
        lines.append("")
        if registry.hook(module, "EVAL_NOTE"):
            lines += [module.EVAL_NOTE, ""]
    variants = [(g, p, v) for g, spec in manifest["graphs"].items() for p, v in spec.get("variants", {}).items()
                if "quantization" in v]
    if variants:
        lines += ["## Precision variants", "", "| graph | file | made by | needs | max abs diff vs fp32 | test (fp32 / variant) |",
                  "|---|---|---|---|---|---|"]
        for graph, precision, v in variants:
            needs = ", ".join(f"`{d}` opset {o}" for d, o in v["domains"].items()) or "standard ops"
            if v.get("test"):
                test = "; ".join(f"{k}: {v['test']['fp32'][k]:.4f} / {v['test'][precision][k]:.4f}"
                                 for k in v["test"]["fp32"])
            else:
                test = v.get("test_note", "not measured")
            lines.append(f"| {graph} | `{v['onnx']}` | {v['quantization']} | {needs} | "
                         f"{v['max_abs_diff_vs_fp32']:.2e} | {test} |")
        lines += ["", "Both test figures score the ONNX graphs the same way (the fp32 one can differ from the "
                  "Keras figure above in the last digits). `python -m zoo.runtime sample <folder> --precision "
                  f"{variants[0][1]}` samples with the variant.", ""]
        for graph, precision, v in variants:
            where = v.get("measured_on")
            if where:
                lines += [f"`{v['onnx']}`'s figures were measured on {where['cpu']} (CPU flags "
                          f"{', '.join(where['flags']) or 'none of ' + ', '.join(INT8_CPU_FLAGS)}). "
                          + int8_portability(v.get("quantize_dynamic", {})), ""]
    return lines


def model_card(module, folder: Path, manifest: dict) -> str:
    """The export's README.md: every number in it is read from the run's own records."""
    name, training, metrics = manifest["model"], manifest["training"], manifest["metrics"]
    summary = (module.__doc__ or "").strip().split("\n\n")
    lines = [front_matter(manifest), f"# {summary[0]}", ""]
    if len(summary) > 1:
        lines += [summary[1], ""]  # the module docstring's second paragraph, as written
    lines += uses_and_limits(manifest) + how_to_use(manifest) + graphs_table(manifest)
    results = _results(module, manifest)
    lines += [
        *results,
        "## Training", "",
        "```sh", f"{training.get('command') or 'python -m zoo train ' + name}", "```", "",
        "trains on the TFDS data (`TFDS_DATA_DIR`), evaluates on the test split and writes this folder.",
        "",
        *([f"Note: {training['note']}", ""] if training.get("note") else []),
        "| | |", "|---|---|",
        f"| parameters | {training.get('params'):,} |",
    ]
    dataset = manifest.get("dataset") or {}
    sizes = dataset.get("sizes") or {}
    if dataset:
        size_text = ", ".join(f"{k} {v:,}" for k, v in sizes.items())
        lines.append(f"| dataset | TFDS `{dataset.get('name')}` ({size_text}) |")
    seconds = training.get("train_seconds") or 0
    machine = training.get("machine") or {}
    where = f"{machine.get('cpus')} CPU cores" + (f", {machine['gpus']} GPU(s)" if machine.get("gpus") else ", no GPU")
    kept = (f"kept: epoch {training.get('best_epoch')}, the lowest validation loss, {training['best_val_loss']:.4f}"
            if training.get("best_val_loss") is not None else "kept: the last epoch")
    lines += [
        f"| epochs | {training.get('epochs_completed')} ({kept}) |",
        f"| training wall time | {seconds / 60:.1f} min (sum of the epoch times in history.csv), {where} |",
        f"| strategy | {training.get('strategy')} |",
        "",
    ]
    config = manifest.get("config") or {}
    lines += ["Preset `" + str(manifest.get("preset")) + "`: " +
              ", ".join(f"`{k}={v}`" for k, v in config.items()), ""]
    if registry.hook(module, "card_sample"):
        lines += [module.card_sample(folder, manifest), ""]
    lines += ["## Files", "", "| file | bytes |", "|---|---|"]
    lines += [f"| `{rel}` | {info['bytes']:,} |" for rel, info in manifest["files"].items() if "/" not in rel]
    sm = sum(i["bytes"] for r, i in manifest["files"].items() if r.startswith("saved_model/"))
    lines += [f"| `saved_model/` | {sm:,} |", "",
              "`manifest.json` lists every graph's inputs and outputs and every file's sha256. "
              "The ONNX graphs were checked against Keras and the SavedModel before publishing "
              f"(max abs difference at most {manifest['parity_tolerance']}; measured values in the manifest).",
              ""]
    newer = {spec["onnx"]: spec["opset"] for spec in manifest["graphs"].values() if spec.get("opset", OPSET) > OPSET}
    for onnx_file, opset in newer.items():  # a graph a runtime of tf2onnx's opset cannot load
        needs = f" (onnxruntime {ONNXRUNTIME_FOR_OPSET[opset]} or newer)" if opset in ONNXRUNTIME_FOR_OPSET else ""
        lines += [f"`{onnx_file}` is ONNX opset {opset}: it needs a runtime that implements opset {opset}{needs}.", ""]
    for spec in manifest["graphs"].values():  # contrib ops: ONNX Runtime's, not every ONNX runtime's
        if spec.get("domains"):
            ops = ", ".join(f"`{d}` opset {o}" for d, o in spec["domains"].items())
            lines += [f"`{spec['onnx']}` uses operators outside ONNX's standard set ({ops}): ONNX Runtime "
                      "has them, and so do the programs built on it (ONNX Runtime GenAI, onnxruntime-web, "
                      "Triton's ONNX Runtime backend); another ONNX runtime runs the graph only if it "
                      "implements them.", ""]
        standard = spec.get("variants", {}).get("standard")
        if standard:
            test = standard.get("test") or {}
            scored = "; ".join(f"{k} {test['fp32'][k]:.4f} / {test['standard'][k]:.4f}" for k in test.get("fp32", {}))
            lines += [f"`{standard['onnx']}` is the same step in ONNX's standard operators only (opset "
                      f"{standard['opset']}), for runtimes that lack the ones `{spec['onnx']}` needs: checked against Keras and "
                      f"the SavedModel as `{spec['onnx']}` is (max abs difference "
                      f"{max(standard['parity_max_abs_diff'].values()):.2e}), with its own test data set "
                      f"(`{standard['test_data']}`); its outputs differ from `{spec['onnx']}`'s by at most "
                      f"{standard['max_abs_diff_vs_fp32']:.2e}" + (f"; test, {spec['onnx']} / this file: {scored}."
                                                                  if scored else "."), ""]
            if registry.hook(module, "STANDARD_NOTE"):
                lines += [module.STANDARD_NOTE, ""]
    lines += license_section(manifest)
    return "\n".join(lines)
