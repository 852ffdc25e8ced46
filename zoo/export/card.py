"""The model card (an export's README.md) and the front matter model hubs read."""

import json
from pathlib import Path

from zoo import registry
from zoo.runtime.core import INT8_CPU_FLAGS
from zoo.export.convert import ONNXRUNTIME_FOR_OPSET, OPSET, int8_portability


# Hub metadata (the YAML front matter model hubs read). The project declares no license yet:
# "other" with this name until it does.
LICENSE_NAME = "zoo-license-not-declared"

PIPELINE_TAGS = {"text-cached": "text-generation", "text-recurrent": "text-generation",
                 "image-generator": "unconditional-image-generation",
                 "image-autoregressive": "unconditional-image-generation",
                 "image-diffusion": "unconditional-image-generation"}  # no hub task fits digit -> audio


def card_metrics(manifest: dict) -> dict:
    """The measured numbers of a manifest that a card shows: {name: value}."""
    return {k: v for k, v in (manifest.get("metrics") or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "eval_seconds"}


def front_matter(manifest: dict) -> str:
    """YAML front matter for model hubs, from the manifest: license, library, tags, dataset,
    pipeline tag, and every measured test metric (`metrics` names them, `model-index` holds the
    values). Strings are JSON-quoted, which YAML reads as they are."""
    q = json.dumps
    kind = (manifest.get("runtime") or {}).get("kind", "")
    dataset = (manifest.get("dataset") or {}).get("name") or (manifest.get("config") or {}).get("dataset", "")
    metrics = card_metrics(manifest)
    lines = ["---", "license: other", f"license_name: {q(LICENSE_NAME)}", f"library_name: {q('keras')}", "tags:"]
    lines += [f"- {q(t)}" for t in ("zoo", manifest["model"], "onnx", "tensorflow", "keras", kind) if t]
    if dataset:
        lines += ["datasets:", f"- {q(dataset)}"]
    if kind in PIPELINE_TAGS:
        lines.append(f"pipeline_tag: {q(PIPELINE_TAGS[kind])}")
    if metrics:
        lines += ["metrics:"] + [f"- {q(k)}" for k in metrics]
        task = PIPELINE_TAGS.get(kind, "audio-generation" if kind.startswith("audio") else kind)
        lines += ["model-index:", f"- name: {q('zoo-' + manifest['model'])}", "  results:",
                  f"  - task: {{type: {q(task)}}}",
                  f"    dataset: {{name: {q(dataset)}, type: {q(dataset)}, split: {q('test')}}}",
                  "    metrics:"]
        lines += [f"    - {{type: {q(k)}, name: {q(k)}, value: {json.dumps(v)}}}" for k, v in metrics.items()]
    return "\n".join(lines + ["---", ""])


def model_card(module, folder: Path, manifest: dict) -> str:
    """The export's README.md: every number in it is read from the run's own records."""
    name, training, metrics = manifest["model"], manifest["training"], manifest["metrics"]
    summary = (module.__doc__ or "").strip().split("\n\n")
    lines = [front_matter(manifest), f"# {summary[0]}", ""]
    if len(summary) > 1:
        lines += [" ".join(summary[1].split()), ""]
    lines += [
        "## Reproduce", "",
        "```sh", f"{training.get('command') or 'python -m zoo train ' + name}", "```", "",
        "trains on the TFDS data (`TFDS_DATA_DIR`), evaluates on the test split and writes this folder.",
        "",
        *([f"Note: {training['note']}", ""] if training.get("note") else []),
        "## Training", "",
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
    shown = card_metrics(manifest)
    if shown:
        lines += ["## Test metrics", "", f"Measured by `{metrics.get('eval_command')}`:", "",
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
    return "\n".join(lines)
