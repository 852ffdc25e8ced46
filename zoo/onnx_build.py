"""Step graphs written directly in ONNX from a Keras model's weights, where tf2onnx's conversion is
slow to run: a Keras GRU called on a sequence converts to an ONNX `Loop` of primitive ops (the
weights carried as loop state), where one ONNX `GRU` op does the same work ~3x faster.

A builder returns an `onnx.ModelProto` with the same input and output names as the Keras graph it
replaces; `zoo.export` checks it against Keras and the SavedModel exactly as it checks tf2onnx's
output, so a wrong weight layout here refuses the export rather than shipping.
"""

import collections
import os
import tempfile

import numpy as np


class GraphBuilder:
    """A few helpers over onnx.helper: initializers from numpy, nodes with generated output names."""

    def __init__(self, name: str, prefix: str = ""):
        self.name, self.nodes, self.initializers, self._count, self._names = name, [], [], 0, set()
        self.prefix = prefix  # of generated output names, to add nodes to a graph that has its own

    def const(self, name: str, value) -> str:
        """An initializer (once per name: shared constants are made by every caller that needs them)."""
        from onnx import numpy_helper

        if name not in self._names:
            self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
            self._names.add(name)
        return name

    def op(self, op_type: str, inputs: list, outputs=1, **attrs):
        from onnx import helper

        if isinstance(outputs, int):
            outputs = [f"{self.prefix}{op_type.lower()}_{self._count}_{i}" for i in range(outputs)]
            self._count += 1
        self.nodes.append(helper.make_node(op_type, inputs, outputs, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def model(self, inputs: list, outputs: list, opset: int, domains: dict = None):
        """inputs/outputs: (name, numpy dtype, shape with None or a name for dynamic axes); domains:
        the opset of each other operator domain the nodes use (e.g. {"com.microsoft": 1})."""
        from onnx import helper

        def info(name, dtype, shape):
            return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)

        graph = helper.make_graph(self.nodes, self.name, [info(*i) for i in inputs], [info(*o) for o in outputs],
                                  self.initializers)
        # The oldest IR version the opset allows (8 for opset 17, as tf2onnx writes), not the onnx
        # package's newest: onnxruntime-web 1.30 refuses IR 14 ("max supported IR version: 13").
        # Other domains' opsets are not in onnx's table and ask for no newer IR.
        opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
        ir_version = helper.find_min_ir_version_for(opsets, ignore_unknown=True)
        return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def group_norms_as_instance_norms(proto):
    """Rewrites tf2onnx's conversion of each Keras `GroupNormalization` in place, for a graph in the
    channels-last layout Keras convolutions use.

    tf2onnx writes a GroupNorm as ~19 nodes: moments by two ReduceMeans over a full-size Sub and
    Mul, Sqrt + Reciprocal, the mean folded into the offset through Neg, and shape arithmetic; in
    ONNX Runtime's profile of the diffusion denoiser these took over a third of a pass (Sub 18.5%,
    ReduceMean 9.1%, much of Add and Mul). Here each becomes ONNX's `InstanceNormalization` (one
    kernel) over [N, groups, H * W * C / groups], with the per-channel scale and offset after it, in
    the channels-first layout the convolutions run in: the Transposes on either side meet the ones
    tf2onnx puts around every Conv, and ONNX Runtime's transpose optimiser cancels them.

    A GroupNorm is found by its `.../moments/mean` ReduceMean; one whose parts are not all where
    tf2onnx puts them is left as it was. Returns the number rewritten (the export's parity check
    against Keras and the SavedModel is what vouches for the result).
    """
    g = proto.graph
    rewritten = 0
    for scope, members, (gamma, epsilon, beta) in _tf2onnx_norms(g, ("Reshape", "mul", "add", "add_1", "add_2")):
        if gamma.ndim != 5 or epsilon.size != 1:
            continue
        groups, channels = gamma.shape[-2], gamma.shape[-2] * gamma.shape[-1]
        # The result leaves through a Reshape back to [N, H, W, C], or (where the next op reshapes it
        # anyway, as attention does) in the grouped shape [N, H, W, groups, C / groups].
        last = members.get("Reshape_3", members["add_2"])
        x, y = members["Reshape"].input[0], last.output[0]
        name = f"{scope}/instance_norm"
        b = GraphBuilder(name, prefix=f"{name}/")
        nchw = b.op("Transpose", [x], perm=[0, 3, 1, 2])
        grouped = b.op("Reshape", [nchw, b.const(f"{name}/grouped_shape", np.array([0, groups, -1], np.int64))])
        normed = b.op("InstanceNormalization", [grouped, b.const(f"{name}/ones", np.ones(groups, np.float32)),
                                                b.const(f"{name}/zeros", np.zeros(groups, np.float32))],
                      epsilon=float(epsilon))
        back = b.op("Reshape", [normed, b.op("Shape", [nchw])])
        scaled = b.op("Mul", [back, b.const(f"{name}/gamma", gamma.reshape(channels, 1, 1).astype(np.float32))])
        shifted = b.op("Add", [scaled, b.const(f"{name}/beta", beta.reshape(channels, 1, 1).astype(np.float32))])
        if last is members["add_2"]:
            nhwc = b.op("Transpose", [shifted], perm=[0, 2, 3, 1])
            b.op("Reshape", [nhwc, b.const(f"{name}/out_shape", np.array([0, 0, 0, groups, -1], np.int64))],
                 outputs=[y])
        else:
            b.op("Transpose", [shifted], outputs=[y], perm=[0, 2, 3, 1])
        for node in b.nodes:
            node.name = node.output[0] if node.output[0] != y else f"{name}/out"
        at = list(g.node).index(last)  # x exists before it; y's consumers come after
        dropped = {id(n) for n in members.values()}
        kept = [n for n in g.node[:at] if id(n) not in dropped] + b.nodes + [n for n in g.node[at:] if id(n) not in dropped]
        del g.node[:]
        g.node.extend(kept)
        g.initializer.extend(b.initializers)
        rewritten += 1
    _drop_dead(g)
    return rewritten


def layer_norms_as_ops(proto):
    """Rewrites tf2onnx's conversion of each Keras `LayerNormalization` over the last axis in place
    as one ONNX `LayerNormalization` (opset 17).

    tf2onnx writes one as 13 nodes (two ReduceMeans over a Sub and a Mul, Sqrt + Reciprocal, the mean
    folded into the offset through Neg) that no ONNX Runtime fusion recognises. A LayerNorm is found
    by its `.../moments/mean` ReduceMean, as in `group_norms_as_instance_norms`; one whose parts are
    not where tf2onnx puts them (a GroupNorm's reshapes, a scale or offset that is not a constant
    vector, another axis) is left as it was. Nodes the rewrite leaves unread go. Returns the number
    rewritten (the export's parity check against Keras and the SavedModel vouches for the result)."""
    from onnx import shape_inference

    g = proto.graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in shape_inference.infer_shapes(proto).graph.value_info
             if v.type.tensor_type.HasField("shape")}
    ranks.update({v.name: len(v.type.tensor_type.shape.dim) for v in g.input})
    rewritten = 0
    for scope, members, (gamma, epsilon, beta) in _tf2onnx_norms(g, ("moments/mean", "mul", "mul_2", "add", "add_1",
                                                                      "add_2")):
        mean = members["moments/mean"]
        x = mean.input[0]
        axes = [a.ints for a in mean.attribute if a.name == "axes"]
        if "Reshape" in members or x not in ranks or not axes or list(axes[0]) not in ([-1], [ranks[x] - 1]) \
                or len(mean.input) > 1 or x not in members["mul_2"].input:
            continue
        if gamma.size != gamma.shape[-1] or beta.shape != gamma.shape or epsilon.size != 1:  # [C] or [1, C]
            continue
        last = members["add_2"]
        name = f"{scope}/layer_norm"
        b = GraphBuilder(name)
        b.op("LayerNormalization", [x, b.const(f"{name}/gamma", gamma.reshape(-1).astype(np.float32)),
                                    b.const(f"{name}/beta", beta.reshape(-1).astype(np.float32))],
             outputs=[last.output[0]], axis=-1, epsilon=float(epsilon.reshape(())))
        b.nodes[0].name = name
        at = list(g.node).index(last)
        g.node.remove(last)
        g.node.insert(at, b.nodes[0])
        g.initializer.extend(b.initializers)
        rewritten += 1
    _drop_dead(g)
    return rewritten


def attribute(node, name: str, default=None):
    """A node's attribute value by name (`default` where the node does not set it)."""
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def pads_into_convs(proto):
    """Folds each zero `Pad` that feeds a `Conv` (directly, or through the `Unsqueeze` and `Transpose`
    tf2onnx puts between a Keras Conv1D's channels-last input and its Conv) into the Conv's own `pads`,
    in place.

    A Keras `Conv1D(padding="causal")` becomes Pad -> Unsqueeze -> Transpose -> Conv. OpenVINO 2026.4's
    CPU plugin cannot compile that chain at a dilation of 64 or more when the time axis is dynamic
    ("Can not clone with new dims"); with the padding on the Conv it compiles, and the graph has one
    node less per convolution. A Pad is folded only when it is constant-mode with a zero (or absent)
    value and constant, non-negative pads, each node from it to the Conv has it as its only reader,
    the Conv has no padding of its own, and the Pad leaves the Conv's batch and channel axes alone.
    Returns the number folded (the export's parity check vouches for the result)."""
    from onnx import helper, numpy_helper

    g = proto.graph
    initializers = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    readers = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            readers[i].append(n)
    graph_outputs = {o.name for o in g.output}
    folded = 0
    for pad in [n for n in g.node if n.op_type == "Pad"]:
        if attribute(pad, "mode", b"constant") != b"constant" or len(pad.input) > 3 or pad.input[1] not in initializers:
            continue
        if len(pad.input) == 3 and pad.input[2] and np.any(initializers.get(pad.input[2], 1) != 0):
            continue
        pads = [int(p) for p in initializers[pad.input[1]]]
        begin, end = pads[: len(pads) // 2], pads[len(pads) // 2 :]  # per axis of the Pad's input
        chain, tensor = [], pad.output[0]
        while tensor not in graph_outputs and len(readers[tensor]) == 1:
            node = readers[tensor][0]
            if node.op_type == "Unsqueeze" and len(node.input) == 2 and node.input[1] in initializers:
                axes = initializers[node.input[1]].reshape(-1)
                for axis in sorted(int(a) % (len(begin) + len(axes)) for a in axes):  # of the output's rank
                    begin.insert(axis, 0)
                    end.insert(axis, 0)
            elif node.op_type == "Transpose" and attribute(node, "perm") is not None:
                perm = attribute(node, "perm")
                begin, end = [begin[p] for p in perm], [end[p] for p in perm]
            else:
                break
            chain.append(node)
            tensor = node.output[0]
        conv = readers[tensor][0] if len(readers[tensor]) == 1 and tensor not in graph_outputs else None
        if (conv is None or conv.op_type != "Conv" or conv.input[0] != tensor or min(pads) < 0
                or attribute(conv, "auto_pad", b"NOTSET") != b"NOTSET" or any(attribute(conv, "pads", [0])) or begin[:2] != [0, 0]
                or end[:2] != [0, 0]):
            continue
        (chain[0] if chain else conv).input[0] = pad.input[0]
        for a in list(conv.attribute):
            if a.name == "pads":
                conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("pads", begin[2:] + end[2:]))
        folded += 1
    _drop_dead(g)
    return folded


def shapes_as_constants(proto, feeds: list) -> dict:
    """Rewrites, in place, the shape arithmetic tf2onnx writes around reshapes into constants, for
    runtimes that need a Reshape's shape before the graph runs (tract 0.23 refuses "shape input is
    variable"). Three steps, each where the graph allows it:
    - a Slice of every element (starts 0, ends past any size, steps 1: tf2onnx's `x[:, None]`) is
      dropped, its readers reading its input;
    - a tensordot, Reshape [..., K] -> [n, K], MatMul by a constant [K, N], Reshape back to [..., N],
      becomes the MatMul alone, which takes the leading axes as they are;
    - a Reshape whose shape is computed gets a constant shape: each output axis of one size in every
      run as that size, one that is always the input's axis at its place as 0 (ONNX's "copy"), and
      at most one other as -1.
    What a shape is, is read off ONNX Runtime runs of the graph on `feeds` (a list of input dicts
    whose dynamic sizes differ), and a rewrite is made only where every run agrees with it; the
    export's parity check on other random sizes vouches for the result. Returns the counts."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    g = proto.graph
    initializers = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    outputs = {o.name for o in g.output}
    counts = {"full_slices": 0, "tensordots": 0, "reshapes": 0}

    rename = {}
    for node in list(g.node):
        if (node.op_type == "Slice" and node.output[0] not in outputs and len(node.input) >= 3
                and all(i in initializers for i in node.input[1:] if i)):
            starts, ends = initializers[node.input[1]], initializers[node.input[2]]
            steps = initializers[node.input[4]] if len(node.input) > 4 and node.input[4] else 1
            if np.all(starts == 0) and np.all(ends >= 10**9) and np.all(steps == 1):
                rename[node.output[0]] = rename.get(node.input[0], node.input[0])
                g.node.remove(node)
                counts["full_slices"] += 1
    for node in g.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
    _drop_dead(g)

    reshapes = [n for n in g.node if n.op_type == "Reshape"]
    if not reshapes:
        return counts
    probe = proto.__class__()
    probe.CopyFrom(proto)
    names = []
    for k, node in enumerate(reshapes):
        for tensor in (node.input[0], node.output[0]):
            names.append(f"shape_probe_{len(names)}")
            probe.graph.node.append(helper.make_node("Shape", [tensor], [names[-1]]))
            probe.graph.output.append(helper.make_tensor_value_info(names[-1], TensorProto.INT64, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    runs = [session.run(names, feed) for feed in feeds]
    shapes = {node.output[0]: [([int(v) for v in run[2 * k]], [int(v) for v in run[2 * k + 1]]) for run in runs]
              for k, node in enumerate(reshapes)}  # Reshape output -> (input shape, output shape) per run

    producer = {o: n for n in g.node for o in n.output}
    readers = collections.Counter(i for n in g.node for i in n.input)
    for back in reshapes:
        matmul = producer.get(back.input[0])
        if (matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in initializers
                or initializers[matmul.input[1]].ndim != 2 or readers[matmul.output[0]] != 1):
            continue
        flat = producer.get(matmul.input[0])
        if flat is None or flat.op_type != "Reshape" or readers[flat.output[0]] != 1 or flat.output[0] in outputs:
            continue
        if all(len(x) >= 2 and xf == [int(np.prod(x[:-1])), x[-1]] and y == x[:-1] + [yf[-1]]
               for (x, xf), (yf, y) in zip(shapes[flat.output[0]], shapes[back.output[0]])):
            matmul.input[0], matmul.output[0] = flat.input[0], back.output[0]
            g.node.remove(back)
            counts["tensordots"] += 1
    _drop_dead(g)

    for node in g.node:
        if node.op_type != "Reshape" or node.input[1] in initializers or attribute(node, "allowzero", 0):
            continue
        seen = shapes[node.output[0]]
        if len({len(y) for _, y in seen}) != 1:
            continue
        constant = []
        for axis in range(len(seen[0][1])):
            sizes = {y[axis] for _, y in seen}
            if len(sizes) == 1:
                constant.append(sizes.pop())
            elif all(axis < len(x) and y[axis] == x[axis] for x, y in seen):
                constant.append(0)
            else:
                constant.append(-1)
        if constant.count(-1) > 1 or not all(_reshaped(x, constant) == y for x, y in seen):
            continue
        name = f"{node.output[0]}/constant_shape"
        g.initializer.append(numpy_helper.from_array(np.array(constant, np.int64), name))
        initializers[name] = constant
        node.input[1] = name
        counts["reshapes"] += 1
    _drop_dead(g)
    return counts


def one_hot_depths_as_scalars(proto) -> int:
    """Gives each `OneHot` whose depth is a constant 1-element tensor (as tf2onnx writes it, and as
    ONNX allows) a scalar depth instead, in place: onnx's reference evaluator (onnx 1.23) takes only
    a scalar there. Returns the number changed."""
    from onnx import numpy_helper

    g = proto.graph
    initializers = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    changed = 0
    for node in g.node:
        depth = initializers.get(node.input[1]) if node.op_type == "OneHot" else None
        if depth is not None and depth.shape == (1,):
            name = f"{node.input[1]}/scalar"
            if name not in initializers:
                initializers[name] = depth.reshape(())
                g.initializer.append(numpy_helper.from_array(initializers[name], name))
            node.input[1] = name
            changed += 1
    _drop_dead(g)
    return changed


def _reshaped(shape: list, target: list) -> list:
    """The shape ONNX's Reshape (allowzero 0) gives `shape` for the target `target`."""
    out = [shape[i] if v == 0 else v for i, v in enumerate(target)]
    if -1 in out:
        known = int(np.prod([v for v in out if v != -1]))
        out[out.index(-1)] = int(np.prod(shape)) // known if known else -1
    return out


def _tf2onnx_norms(g, needed):
    """tf2onnx's conversions of Keras normalisation layers, each found by its `.../moments/mean`
    ReduceMean: (scope, its nodes by name within the scope, (scale, epsilon, offset)) for each scope
    that holds the nodes `needed` and whose `mul`, `add` and `add_1` each read one constant. Each
    scope's nodes are looked up when it is reached, so a caller may rewrite the graph between them."""
    from onnx import numpy_helper

    initializers = {i.name: i for i in g.initializer}
    suffix = "/moments/mean"
    scopes = [n.name[: -len(suffix)] for n in g.node if n.op_type == "ReduceMean" and n.name.endswith(suffix)]
    for scope in scopes:
        members = {n.name[len(scope) + 1 :]: n for n in g.node if n.name.startswith(scope + "/")}
        if not all(k in members for k in needed):
            continue
        consts = [[numpy_helper.to_array(initializers[i]) for i in members[k].input if i in initializers]
                  for k in ("mul", "add", "add_1")]
        if any(len(v) != 1 for v in consts):
            continue
        yield scope, members, tuple(v[0] for v in consts)


def _drop_dead(g):
    """Removes nodes whose outputs nothing reads (as the removed GroupNorms' shape arithmetic) and
    initializers no node reads."""
    while True:
        read = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        live = [n for n in g.node if any(o in read for o in n.output)]
        if len(live) == len(g.node):
            break
        del g.node[:]
        g.node.extend(live)
    read = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in read]
    del g.initializer[:]
    g.initializer.extend(kept)


def intermediates(proto) -> list:
    """The largest tensor a graph computes between its inputs and outputs, per shape form: from ONNX
    Runtime's symbolic shape inference, one {"shape": [...], "bytes": bytes per element} for each set
    of named dimensions (the largest fixed part), each dimension a size or an expression of the input
    dimensions' names ("batch*frames + 6"). zoo.runtime adds the largest at a call's sizes to its
    inputs and outputs when it bounds the call's memory. [] where the inference cannot finish."""
    from onnx import helper
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    here = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:  # where it cannot finish, it saves its work in the cwd
        os.chdir(scratch)
        try:
            inferred = SymbolicShapeInference.infer_shapes(proto, auto_merge=True)
        except Exception:  # noqa: BLE001 - an op it does not know (the int8 LSTM, the standard Attention)
            return []
        finally:
            os.chdir(here)
    largest = {}
    for vi in inferred.graph.value_info:
        tensor = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim]
        if not tensor.HasField("shape") or any(d == "" for d in dims):
            continue
        size = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize
        fixed = size * int(np.prod([d for d in dims if isinstance(d, int)], dtype=np.int64))
        key = tuple(sorted(d for d in dims if isinstance(d, str)))
        if fixed > largest.get(key, (0, None))[0]:
            largest[key] = (fixed, {"shape": dims, "bytes": size})
    return [entry for _, entry in sorted(largest.values(), key=lambda e: -e[0])]
