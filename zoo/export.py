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

import dataclasses
import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from zoo import onnx_build, registry
from zoo.models import load_model
from zoo.config import ZooError
from zoo.files import write_json
from zoo.data import DataUnavailableError
from zoo.runtime.core import FORMAT, INT8_CPU_FLAGS, sha256_file

OPSET = 17
# The first onnxruntime release that runs a graph of this opset (graphs built above OPSET: the
# transformer's decoder is opset 23).
ONNXRUNTIME_FOR_OPSET = {23: "1.23"}
TOLERANCE = 1e-4


class ExportError(ZooError):
    """The export failed a check and was not published."""


@dataclasses.dataclass
class Graph:
    """One exported, deterministic step: a function of named tensors returning a dict of tensors."""

    name: str                      # file stem and SavedModel signature name
    fn: Callable                   # fn(*inputs in signature order) -> {output name: tensor}
    input_signature: list          # tf.TensorSpec with name=, dynamic axes as None
    axes: dict                     # input/output name -> dims: int, or a str naming a dynamic axis;
                                   # outputs appear in the ONNX graph in this dict's order
    example: Callable              # example(rng) -> {input name: np.ndarray}: random inputs, random sizes
    ranges: dict = dataclasses.field(default_factory=dict)  # integer input -> (lo, hi): lo <= value < hi
    intervals: dict = dataclasses.field(default_factory=dict)  # float input -> (lo, hi): lo <= value <= hi
    # build(opset) -> onnx.ModelProto written from the weights (zoo/onnx_build.py) instead of tf2onnx's
    # conversion of `fn`; checked against Keras and the SavedModel the same way.
    build: Callable = None
    # rewrite(proto) -> None: edits tf2onnx's conversion in place (zoo/onnx_build.py), before the same checks.
    rewrite: Callable = None
    # Where `build` uses operators outside ONNX's standard set (ONNX Runtime's contrib ops): the same
    # step built in standard ops only, for other runtimes; exported beside it as `<name>.standard.onnx`
    # (the manifest's `standard` variant), checked against Keras and the SavedModel the same way on
    # its own `example`s, with its own test data set.
    standard: "Graph" = None

    def tf_function(self):
        return tf.function(self.fn, input_signature=self.input_signature)


def _set_axes(value_infos, axes):
    for vi in value_infos:
        dims = axes.get(vi.name)
        if dims is None:
            continue
        shape = vi.type.tensor_type.shape
        if len(shape.dim) != len(dims):
            raise ExportError(f"{vi.name}: ONNX rank {len(shape.dim)} but axes say {dims}")
        for d, want in zip(shape.dim, dims):
            if isinstance(want, str):
                d.dim_param = want
            else:
                d.dim_value = int(want)


def shape_probes(graph: Graph) -> list:
    """Inputs that `onnx_build.shapes_as_constants` reads a tf2onnx graph's shapes off: three random
    examples (random sizes) and the first again with each dynamic axis twice as long (tiled, so its
    values stay valid), from a generator of their own (the parity check's draws stay as they were)."""
    rng = np.random.default_rng(0)
    examples = [graph.example(rng) for _ in range(3)]
    doubled = {name: np.tile(value, [2 if isinstance(d, str) else 1 for d in graph.axes[name]])
               if name in graph.axes else value for name, value in examples[0].items()}
    return examples + [doubled]


def to_onnx(graph: Graph, metadata: dict):
    import onnx
    import tf2onnx

    if graph.build is not None:
        proto = graph.build(OPSET)
    else:
        with tf.device("/CPU:0"):  # cuDNN RNN kernels do not convert; trace the CPU ones
            proto, _ = tf2onnx.convert.from_function(
                graph.tf_function(), input_signature=graph.input_signature, opset=OPSET
            )
        if graph.rewrite is not None:
            graph.rewrite(proto)
        # run-time shape arithmetic as constants: other runtimes (tract) need a Reshape's shape up front
        onnx_build.shapes_as_constants(proto, shape_probes(graph))
        onnx_build.one_hot_depths_as_scalars(proto)  # onnx's reference evaluator takes no other depth
    _set_axes(proto.graph.input, graph.axes)
    _set_axes(proto.graph.output, graph.axes)
    # tf2onnx orders outputs by sorted name; use the order `axes` lists them in (next_h_0, next_c_0, ...).
    order = {name: i for i, name in enumerate(graph.axes)}
    outputs = sorted(proto.graph.output, key=lambda vi: order.get(vi.name, len(order)))
    outputs = [onnx.ValueInfoProto.FromString(vi.SerializeToString()) for vi in outputs]
    del proto.graph.output[:]
    proto.graph.output.extend(outputs)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    proto.doc_string = f"zoo {metadata.get('zoo.model')} graph '{graph.name}'"
    onnx.checker.check_model(proto)
    expected = [s.name for s in graph.input_signature]
    got = [i.name for i in proto.graph.input]
    if got != expected:
        raise ExportError(f"graph {graph.name}: ONNX inputs {got} differ from the signature {expected}")
    return proto


def _describe(value_infos):
    import onnx

    out = []
    for vi in value_infos:
        t = vi.type.tensor_type
        out.append({
            "name": vi.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
            "shape": [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim],
        })
    return out


def with_ranges(inputs: list, ranges: dict, intervals: dict = None) -> list:
    """The manifest's input descriptions with the values each input takes, where it is bounded: an
    integer input's "range" [lo, hi] means lo <= value < hi, a float input's "interval" [lo, hi]
    lo <= value <= hi (a binarised image's pixels in [0, 1], not 0..255). zoo.runtime checks both
    before running the graph."""
    for spec in inputs:
        if spec["name"] in ranges:
            spec["range"] = [int(v) for v in ranges[spec["name"]]]
        if spec["name"] in (intervals or {}):
            spec["interval"] = [float(v) for v in intervals[spec["name"]]]
    return inputs


def record_input_ranges(folder) -> dict:
    """Add the input ranges and intervals of an export made before the manifest recorded them
    (manifest.json is not among the files it checksums, so the export still verifies). Returns the
    updated manifest."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    graphs = registry.get(manifest["model"]).export_graphs(load_model(folder / "model.keras"))
    for g in graphs:
        with_ranges(manifest["graphs"][g.name]["inputs"], g.ranges, g.intervals)
    write_json(folder / "manifest.json", manifest)  # a published export's: never half written
    return manifest


def record_intermediates(folder) -> dict:
    """Add each graph's `intermediates` (onnx_build.intermediates) to the manifest of an export made
    before the manifest recorded them (manifest.json is not among the files it checksums, so the
    export still verifies). Returns the updated manifest."""
    import onnx

    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for spec in manifest["graphs"].values():
        spec["intermediates"] = onnx_build.intermediates(onnx.load(str(folder / spec["onnx"])))
    write_json(folder / "manifest.json", manifest)  # a published export's: never half written
    return manifest


def check_parity(graph, tf_fn, signature_fn, session, rng, tolerance, trials=3):
    """Max abs difference of each output: Keras vs SavedModel vs ONNX Runtime, on random inputs.

    Runs `trials` random examples (their shapes vary too, exercising the dynamic axes); returns the
    worst differences, and the last example's inputs and Keras outputs (for the test data set).
    """
    worst = {}
    names = [o.name for o in session.get_outputs()]
    for _ in range(trials):
        inputs = graph.example(rng)
        reference = {k: v.numpy() for k, v in tf_fn(*[inputs[s.name] for s in graph.input_signature]).items()}
        saved = {k: v.numpy() for k, v in signature_fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}
        onnx_out = dict(zip(names, session.run(names, inputs)))
        for key, ref in reference.items():
            for label, other in (("saved_model", saved[key]), ("onnxruntime", onnx_out[key])):
                if other.shape != ref.shape:
                    raise ExportError(f"{graph.name}/{key}: {label} shape {other.shape} != Keras {ref.shape}")
                diff = float(np.max(np.abs(other.astype(np.float64) - ref.astype(np.float64)))) if ref.size else 0.0
                worst[f"{key}/{label}"] = max(diff, worst.get(f"{key}/{label}", 0.0))
                if not diff <= tolerance:
                    raise ExportError(
                        f"graph {graph.name}: output {key} differs between Keras and {label} by {diff:.3g} "
                        f"(> {tolerance}); the export was not published"
                    )
    return worst, inputs, reference


def write_test_data(folder: Path, graph, inputs: dict, outputs: dict, output_names):
    from onnx import numpy_helper

    folder.mkdir(parents=True)
    for i, spec in enumerate(graph.input_signature):
        tensor = numpy_helper.from_array(inputs[spec.name], spec.name)
        (folder / f"input_{i}.pb").write_bytes(tensor.SerializeToString())
    for i, name in enumerate(output_names):
        tensor = numpy_helper.from_array(outputs[name], name)
        (folder / f"output_{i}.pb").write_bytes(tensor.SerializeToString())


def read_test_inputs(folder: Path) -> dict:
    """The inputs of a test data set `write_test_data` wrote: {input name: array}."""
    import onnx
    from onnx import numpy_helper

    tensors = [onnx.TensorProto.FromString(p.read_bytes()) for p in sorted(Path(folder).glob("input_*.pb"))]
    return {t.name: numpy_helper.to_array(t) for t in tensors}


def file_table(root: Path, skip=("manifest.json",)) -> dict:
    return {
        str(p.relative_to(root)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(root.rglob("*"))
        if p.is_file() and str(p.relative_to(root)) not in skip
    }


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


def contrib_domains(proto) -> dict:
    """The operator domains other than ONNX's own that a graph's nodes use, each with its opset
    (ONNX Runtime's contrib ops are {"com.microsoft": 1}): a runtime must implement them."""
    domains = sorted({n.domain for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    return {d: next(o.version for o in proto.opset_import if o.domain == d) for d in domains}


def onnx_opset(proto) -> int:
    """The graph's opset of ONNX's own operators."""
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def write_checked(folder: Path, graph: Graph, stem: str, metadata: dict, tf_fn, signature_fn, rng, tolerance):
    """`<stem>.onnx` in `folder`: `graph` in ONNX (to_onnx), checked against Keras and the SavedModel
    (check_parity: refused past `tolerance`), with its test data set in test_data/<stem>/. Returns
    (proto, its ONNX Runtime session, the test data folder relative to `folder`, the parity
    differences, the test data's inputs)."""
    import onnx
    import onnxruntime as ort

    proto = to_onnx(graph, metadata)
    onnx.save(proto, str(folder / f"{stem}.onnx"))
    session = ort.InferenceSession(str(folder / f"{stem}.onnx"), providers=["CPUExecutionProvider"])
    diffs, inputs, reference = check_parity(graph, tf_fn, signature_fn, session, rng, tolerance)
    test_dir = Path("test_data") / stem / "test_data_set_0"
    write_test_data(folder / test_dir, graph, inputs, reference, [o.name for o in proto.graph.output])
    return proto, session, test_dir, diffs, inputs


def standard_variant(folder: Path, graph: Graph, metadata: dict, fp32_session, checks: tuple) -> dict:
    """`<graph>.standard.onnx` beside `<graph>.onnx` (whose session is `fp32_session`): `graph.standard`,
    the same step in ONNX's standard ops, written and checked as `graph` is (`checks`: write_checked's
    tf_fn, signature_fn, rng, tolerance), with its own test data set; and its manifest entry."""
    name = f"{graph.name}.standard"
    proto, session, test_dir, diffs, inputs = write_checked(folder, graph.standard, name, metadata, *checks)
    domains = contrib_domains(proto)
    if domains:
        raise ExportError(f"graph {name}: uses {domains}, not ONNX's standard ops only")
    return {
        "onnx": f"{name}.onnx",
        "opset": onnx_opset(proto),
        "made_by": "the same step written in ONNX's standard operators only, for runtimes without "
                   f"the contrib operators {graph.name}.onnx uses",
        "domains": {},
        "test_data": str(test_dir),
        "parity_max_abs_diff": diffs,
        "max_abs_diff_vs_fp32": float(max(np.max(np.abs(a - b)) for a, b in zip(
            session.run(None, inputs), fp32_session.run([o.name for o in session.get_outputs()], inputs)))),
    }


def int8_variant(folder: Path, graph_name: str, settings: dict, inputs: dict) -> dict:
    """`<graph>.int8.onnx` beside `<graph>.onnx` by onnxruntime's dynamic quantisation (`quantize_int8`
    with `settings`: the op types and quantize_dynamic's options), and its manifest entry: how it was
    made, the contrib domain it needs, its largest output difference from fp32 on `inputs` (the graph's
    test data) and the CPU features of the machine that measured it (int8 kernels differ between CPUs)."""
    import onnxruntime as ort

    from zoo.runtime.core import cpu_features

    source, target = folder / f"{graph_name}.onnx", folder / f"{graph_name}.int8.onnx"
    proto = quantize_int8(source, target, settings)
    outputs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, inputs)
               for p in (source, target)]
    options = {k: v for k, v in settings.items() if k != "op_types"}
    return {
        "onnx": target.name,
        "quantization": f"onnxruntime.quantization.quantize_dynamic, {', '.join(settings['op_types'])}, "
                        + ", ".join(f"{k}={v}" for k, v in {"weight_type": "QInt8", **options}.items()),
        "quantize_dynamic": {"op_types_to_quantize": list(settings["op_types"]), **options},
        "domains": contrib_domains(proto),
        "max_abs_diff_vs_fp32": float(max(np.max(np.abs(a - b)) for a, b in zip(*outputs))),
        "measured_on": cpu_features(),
    }


def int8_portability(options: dict) -> str:
    """What an int8 variant made with quantize_dynamic `options` does on other x86-64 CPUs (for the card)."""
    saturation = ("ONNX Runtime's int8 kernels differ between CPUs: with VNNI (avx512_vnni, avx_vnni, amx_int8) "
                  "they sum uint8 x int8 products in 32 bits; without it (AVX2 alone, or AVX-512 without VNNI) "
                  "they sum pairs of them in 16 bits, which saturate when weights and activations are both large. ")
    if options.get("weight_type") == "QUInt8":
        how = ("This variant's weights are uint8, which ONNX Runtime multiplies in its u8u8 kernels: they widen "
               "to 16 bits before multiplying and saturate on no CPU.")
    elif options.get("reduce_range"):
        how = ("This variant's weights are 7-bit (`reduce_range`), so no pair's sum leaves 16 bits: nothing "
               "saturates on any x86-64 CPU.")
    else:
        return saturation + "This variant's int8 weights use all 8 bits: on a CPU without VNNI its outputs can differ."
    return (saturation + how + " On an emulated AVX2 CPU without VNNI its score of the test split's first 8,192 "
            "characters came out within 0.001 of this CPU's; its speed there was not measured "
            "(benchmarks/int8-choices.md).")


def quantize_int8(source: Path, target: Path, settings: dict):
    """onnxruntime's `quantize_dynamic` of `source` into `target` (returned as a proto): int8 weights
    of `settings["op_types"]`, activations quantised at run time; the other keys are quantize_dynamic's
    own (`reduce_range`, `per_channel`, `weight_type` by its QuantType name)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    options = {k: v for k, v in settings.items() if k != "op_types"}
    options["weight_type"] = QuantType[options.get("weight_type", "QInt8")]
    # onnx's shape inference knows no contrib op's output type (the transformer's GroupQueryAttention):
    # tensors it leaves untyped are float32, as every activation here is
    quantize_dynamic(str(source), str(target), op_types_to_quantize=list(settings["op_types"]),
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}, **options)
    return onnx.load(str(target))


def score_variants(folder: Path, graph_name: str, variants: dict, module, info: dict, config: dict):
    """Each variant's `test`: the module's test metric for the graph's fp32 file and the variant's
    (`variant_metrics`, every file scored once, the same way), or why it was not measured."""
    files = {"fp32": f"{graph_name}.onnx", **{key: v["onnx"] for key, v in variants.items()}}
    try:
        scores = module.variant_metrics(folder, graph_name, files, info, config)
    except (DataUnavailableError, ValueError) as e:  # no data here, or text the vocabulary cannot encode
        for v in variants.values():                  # (a model fine-tuned on other text)
            v["test"], v["test_note"] = None, f"not measured: {str(e).splitlines()[0]}"
        return
    for key, v in variants.items():
        v["test"] = {"fp32": scores["fp32"], key: scores[key]}


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
        errno = ctypes.get_errno()
        if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the filesystem or kernel cannot
            return False
        raise OSError(errno, os.strerror(errno), str(b))
    return True


def publish(tmp: Path, out_dir: Path):
    """Put the finished folder `tmp` at `out_dir`. With an export already there the two are swapped
    in one step, so `out_dir` is at every moment the old export or the new one, never missing;
    then the old one, now at `tmp`, is removed (a kill before that leaves it for `remove_leftovers`)."""
    if not out_dir.exists():
        os.rename(tmp, out_dir)
    elif _exchange(tmp, out_dir):
        shutil.rmtree(tmp, ignore_errors=True)
    else:  # two renames: a kill between them leaves the old export at .<name>.old-<pid>
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(out_dir: Path):
    """Folders that killed exports to `out_dir` left beside it (`.<name>.partial-<pid>-*`, the old
    export in `.<name>.old-<pid>`), unless their process still runs. Where a kill between the two
    renames of the fallback left no `out_dir`, the old export is put back first."""
    for path in sorted(out_dir.parent.glob(f".{out_dir.name}.*")):
        kind, _, rest = path.name[len(out_dir.name) + 2 :].partition("-")
        pid = rest.split("-")[0]
        if kind not in ("partial", "old") or not pid.isdigit() or _alive(int(pid)) and int(pid) != os.getpid():
            continue
        if kind == "old" and not out_dir.exists():
            os.rename(path, out_dir)
        else:
            shutil.rmtree(path, ignore_errors=True)


def save_saved_model(model, graphs, tf_fns, path: Path):
    """A SavedModel with one signature per graph, the first also as `serving_default`.

    Plain `tf.saved_model.save` on a `tf.Module` holding the model's variables: Keras's
    ExportArchive (3.15) writes every variable twice, doubling the folder.
    """
    module = tf.Module()
    module.model_variables = list(model.variables)
    signatures = {}
    for i, g in enumerate(graphs):
        setattr(module, g.name, tf_fns[g.name])
        concrete = tf_fns[g.name].get_concrete_function()
        signatures[g.name] = concrete
        if i == 0:
            signatures["serving_default"] = concrete
    tf.saved_model.save(module, str(path), signatures=signatures)


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


def _write_manifest(folder: Path, manifest: dict):
    manifest["files"] = file_table(folder)
    write_json(folder / "manifest.json", manifest)  # rewrite_card writes a published export's in place


def _save_without_optimizer(model, path: Path):
    """Save `model` with its compile config but no optimizer variables.

    Keras 3 saves the optimizer's slots with the model (Adam: twice the weights); a user who
    fine-tunes compiles afresh anyway. A copy from the same config and weights, compiled with an
    unbuilt optimizer, saves the weights once.
    """
    copy = model.__class__.from_config(model.get_config())
    copy.build_from_config(model.get_build_config())
    copy.set_weights(model.get_weights())
    config = model.get_compile_config()
    if config and type(copy).compile is keras.Model.compile:
        # Keras's own compile_from_config builds the optimizer (zero-filled slots, saved too).
        copy.compile(**keras.saving.deserialize_keras_object(config))
    elif config:
        copy.compile_from_config(config)  # the zoo's custom compiles leave the optimizer unbuilt
    copy.save(path)


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
