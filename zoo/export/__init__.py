"""Publishing a trained model: `exports/<model>/` with Keras, SavedModel and ONNX forms of it.

What an export folder holds:
  model.keras                 the Keras model (loads with safe_mode=True), without optimizer state
  saved_model/                a SavedModel with one signature per graph, the first also `serving_default`
  <graph>.onnx                one ONNX graph per exported step (e.g. `step.onnx`)
  test_data/<graph>/test_data_set_0/   input_i.pb / output_i.pb, the ONNX model-zoo convention
  manifest.json               graphs' inputs and outputs, runtime info, config, data, metrics,
                              versions, and the sha256 and size of every file
  README.md                   the model card

Before anything is published, every graph is run in Keras, in the reloaded SavedModel and in
ONNX Runtime on random inputs; a difference above `tolerance` refuses the export. The folder is
written beside its destination and renamed into place at the end, so a failure never leaves half
an export and never destroys the previous one: the new folder and the old one are swapped in one
step (`publish`), and what a killed export left beside the destination is removed by the next one.
"""

import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from zoo import onnx_build, registry
from zoo.models import load_model
from zoo.runtime.core import FORMAT

# the parts, and the names callers use (zoo.export.Graph, read_test_inputs, quantize_int8, ...)
from zoo.export.card import card_metrics, front_matter, model_card  # noqa: F401
from zoo.export.convert import (  # noqa: F401
    ONNXRUNTIME_FOR_OPSET, OPSET, TOLERANCE, ExportError, Graph, _describe, _save_without_optimizer, check_parity,
    contrib_domains, int8_portability, int8_variant, onnx_opset, quantize_int8, read_test_inputs, record_input_ranges,
    record_intermediates, save_saved_model, score_variants, shape_probes, standard_variant, to_onnx, with_ranges,
    write_checked, write_test_data,
)
from zoo.export.folder import _write_manifest, file_table, publish, remove_leftovers  # noqa: F401


def export(name, run_dir, out_dir, tolerance=TOLERANCE, seed=0, sample_defaults=None) -> Path:
    """Export the trained model in `run_dir` to `out_dir`; returns `out_dir`. `sample_defaults`
    replaces some of the model's sampling defaults (the runtime's, and the card's samples), e.g.
    {"per_label": 2} for a smaller grid."""
    from zoo.train import package_versions

    module = registry.get(name)
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    model_path = run_dir / "model.keras"
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path} does not exist: train first (python -m zoo train {name})")
    run = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    model = load_model(model_path)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-{os.getpid()}-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; an export is for everyone to read
    try:
        # Keras: a copy without optimizer slots (a third of the size); it must load in safe mode.
        _save_without_optimizer(model, tmp / "model.keras")
        keras.models.load_model(tmp / "model.keras", safe_mode=True)

        graphs = module.export_graphs(model)
        tf_fns = {g.name: g.tf_function() for g in graphs}

        save_saved_model(model, graphs, tf_fns, tmp / "saved_model")
        loaded = tf.saved_model.load(str(tmp / "saved_model"))

        info = module.runtime_info(model)
        if sample_defaults:
            have = info.get("sample_defaults", {})
            unknown = sorted(set(sample_defaults) - set(have))
            if unknown:
                raise ValueError(f"sample_defaults: {name} has no {', '.join(unknown)} (it has: {', '.join(have)})")
            info = dict(info, sample_defaults=dict(have, **sample_defaults))
        manifest_graphs, test_inputs = {}, {}
        rng = np.random.default_rng(seed)
        for g in graphs:
            metadata = {
                "zoo.model": name,
                "zoo.preset": run.get("preset", ""),
                "zoo.graph": g.name,
                "zoo.runtime": info,
                "zoo.dataset": run.get("dataset", {}).get("name", ""),
            }
            checks = (tf_fns[g.name], loaded.signatures[g.name], rng, tolerance)
            proto, session, test_dir, diffs, inputs = write_checked(tmp, g, g.name, metadata, *checks)
            test_inputs[g.name] = inputs
            manifest_graphs[g.name] = {
                "onnx": f"{g.name}.onnx",
                "opset": onnx_opset(proto),
                "saved_model_signature": g.name,
                "inputs": with_ranges(_describe(proto.graph.input), g.ranges, g.intervals),
                "outputs": _describe(proto.graph.output),
                "test_data": str(test_dir),
                "parity_max_abs_diff": diffs,
                # its largest tensors between inputs and outputs: zoo.runtime bounds a call's memory with them
                "intermediates": onnx_build.intermediates(proto),
            }
            domains = contrib_domains(proto)  # operators a runtime beyond ONNX's standard set must have
            if domains:
                manifest_graphs[g.name]["domains"] = domains
            if g.standard is not None:
                manifest_graphs[g.name]["variants"] = {"standard": standard_variant(tmp, g, metadata, session, checks)}

        for graph_name, settings in registry.hook(module, "INT8_GRAPHS", {}).items():
            manifest_graphs[graph_name].setdefault("variants", {})["int8"] = int8_variant(
                tmp, graph_name, settings, test_inputs[graph_name])
        for graph_name, spec in manifest_graphs.items():
            if spec.get("variants") and registry.hook(module, "variant_metrics"):
                score_variants(tmp, graph_name, spec["variants"], module, info, run.get("config") or {})

        if registry.hook(module, "export_files"):  # files other programs read (e.g. ONNX Runtime GenAI's)
            module.export_files(model, tmp, info)

        manifest = {
            "format": FORMAT,
            "model": name,
            "preset": run.get("preset"),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "keras": "model.keras",
            "saved_model": {"dir": "saved_model", "signatures": ["serving_default"] + [g.name for g in graphs]},
            "graphs": manifest_graphs,
            "runtime": info,
            "config": run.get("config"),
            "dataset": run.get("dataset"),
            "training": {k: run.get(k) for k in ("command", "strategy", "params", "epochs_completed",
                                                  "best_epoch", "best_val_loss", "train_seconds",
                                                  "resumed", "machine", "note")},
            "metrics": metrics,
            "parity_tolerance": tolerance,
            "versions": package_versions(),
        }
        _write_manifest(tmp, manifest)
        (tmp / "README.md").write_text(model_card(module, tmp, manifest))
        _write_manifest(tmp, manifest)  # again, now with the card's checksum

        publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def rewrite_card(name: str, folder) -> Path:
    """Write an existing export's README.md again from its manifest (samples included), and the
    manifest's file table: for a card whose code changed, without converting the graphs again."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"].pop("README.md", None)  # the card lists the other files, as a new export's does
    (folder / "README.md").write_text(model_card(registry.get(name), folder, manifest))
    _write_manifest(folder, manifest)
    return folder


def remake_int8(name: str, folder) -> Path:
    """Make an export's int8 variants again from its own fp32 graphs with the model's INT8_GRAPHS
    settings, checked on each graph's test data and scored on the test split as `export` does them,
    then its card and file table: for new quantisation settings, without converting the graphs again."""
    folder, module = Path(folder), registry.get(name)
    manifest = json.loads((folder / "manifest.json").read_text())
    for graph_name, settings in registry.hook(module, "INT8_GRAPHS", {}).items():
        spec = manifest["graphs"][graph_name]
        inputs = read_test_inputs(folder / spec["test_data"])
        spec.setdefault("variants", {})["int8"] = int8_variant(folder, graph_name, settings, inputs)
        score_variants(folder, graph_name, {"int8": spec["variants"]["int8"]}, module, manifest["runtime"],
                       manifest.get("config") or {})
    _write_manifest(folder, manifest)
    return rewrite_card(name, folder)
