"""Converting a trained model's graphs: ONNX from TensorFlow (tf2onnx) with the manifest's input and output
specs, the checks that each graph answers as Keras and the SavedModel do, the test data sets, and the
standard-ops and int8 variants."""

import contextlib
import dataclasses
import json
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
    with _without_preprocessing_advice():
        quantize_dynamic(str(source), str(target), op_types_to_quantize=list(settings["op_types"]),
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}, **options)
    return onnx.load(str(target))


@contextlib.contextmanager
def _without_preprocessing_advice():
    """quantize_dynamic logs "Please consider to run pre-processing before quantization" on the root
    logger for every graph; its pre-processing (shape inference, optimisation) is for static
    quantisation of models it has not seen, and the variant is checked and scored after: drop the line."""
    import logging

    advice = lambda record: "pre-processing before quantization" not in record.getMessage()  # noqa: E731
    logging.getLogger().addFilter(advice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(advice)


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
