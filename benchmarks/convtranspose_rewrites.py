"""Three rewrites of a graph's stride-2 ConvTranspose nodes (the vae decoder's, the gan generator's),
written beside the export for `python -m zoo.bench --compare-graphs OLD NEW`; none is faster enough to
ship (record: benchmarks/compare-convtranspose.md).

    .venv/bin/python benchmarks/convtranspose_rewrites.py exports/vae/decoder.onnx OUT_DIR

writes OUT_DIR/<stem>.<mode>.onnx for each mode:
- subpixel: one Conv over the input with s*s times the output channels (each output phase's taps, zeros
  where a phase has none), then DepthToSpace: the sub-pixel form, more multiplications than the
  ConvTranspose but ONNX Runtime's Conv kernel;
- phases: one Conv per output phase with only its own taps, concatenated, then DepthToSpace;
- col2im: one MatMul of the weights [Cout*k*k, Cin] with every image's pixels at once, then ONNX's
  Col2Im (opset 18) and the bias: ONNX Runtime's ConvTranspose runs a small GEMM and a col2im per image.
Each handles a ConvTranspose whose output is exactly `stride` times its input (kernel - pads == stride),
with no groups, dilations or output padding, as the two exports' are."""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zoo import onnx_build  # noqa: E402

attr = onnx_build.attribute

MODES = ("subpixel", "phases", "col2im")


def rewrite(proto, mode):
    g = proto.graph
    initializers = {i.name: i for i in g.initializer}
    nodes, count = [], 0
    for node in g.node:
        s, k = attr(node, "strides"), attr(node, "kernel_shape")
        pads = attr(node, "pads", [0, 0, 0, 0])
        if (node.op_type != "ConvTranspose" or node.input[1] not in initializers or attr(node, "group", 1) != 1
                or attr(node, "output_padding") or attr(node, "output_shape") or s[0] != s[1]
                or any(d != 1 for d in attr(node, "dilations", [1, 1]))
                or any(k[d] - pads[d] - pads[d + 2] != s[d] for d in range(2))):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(initializers[node.input[1]])  # [Cin, Cout, kh, kw]
        cin, cout = w.shape[:2]
        bias = (numpy_helper.to_array(initializers[node.input[2]]) if len(node.input) > 2 and node.input[2]
                else np.zeros(cout, np.float32)).astype(np.float32)
        name = node.name or node.output[0]

        def const(suffix, value):
            g.initializer.append(numpy_helper.from_array(np.asarray(value), f"{name}/{suffix}"))
            return f"{name}/{suffix}"

        def op(op_type, inputs, output=None, **attrs):
            output = output or f"{name}/{op_type.lower()}_{len(nodes)}"
            nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
            return output

        # Output row s*q + r reads input row q + o through kernel row (r + pad - s*o): per axis and phase
        # r, {input offset o: kernel index}.
        taps = [[{(r + pads[d] - t) // s[d]: t for t in range(k[d]) if (r + pads[d] - t) % s[d] == 0}
                 for r in range(s[d])] for d in range(2)]

        def phase_kernel(rows, cols, lo):
            kernel = np.zeros((cout, cin, max(rows) - lo[0] + 1, max(cols) - lo[1] + 1), np.float32)
            for oh, kh in rows.items():
                for ow, kw in cols.items():
                    kernel[:, :, oh - lo[0], ow - lo[1]] = w[:, :, kh, kw].T
            return kernel

        if mode == "subpixel":
            lo = [min(o for phase in taps[d] for o in phase) for d in range(2)]
            hi = [max(o for phase in taps[d] for o in phase) for d in range(2)]
            kernel = np.zeros((cout, s[0], s[1], cin, hi[0] - lo[0] + 1, hi[1] - lo[1] + 1), np.float32)
            for rh in range(s[0]):
                for rw in range(s[1]):
                    part = phase_kernel(taps[0][rh], taps[1][rw], lo)
                    kernel[:, rh, rw, :, : part.shape[2], : part.shape[3]] = part
            y = op("Conv", [node.input[0], const("w", kernel.reshape(-1, cin, *kernel.shape[-2:])),
                            const("b", np.repeat(bias, s[0] * s[1]))],
                   kernel_shape=list(kernel.shape[-2:]), pads=[-lo[0], -lo[1], hi[0], hi[1]])
            op("DepthToSpace", [y], node.output[0], blocksize=s[0], mode="CRD")
        elif mode == "phases":
            parts = []
            for rh in range(s[0]):
                for rw in range(s[1]):
                    rows, cols = taps[0][rh], taps[1][rw]
                    lo = [min(rows), min(cols)]
                    kernel = phase_kernel(rows, cols, lo)
                    parts.append(op("Conv", [node.input[0], const(f"w{rh}{rw}", kernel), const(f"b{rh}{rw}", bias)],
                                    kernel_shape=list(kernel.shape[-2:]),
                                    pads=[-lo[0], -lo[1], max(rows), max(cols)]))
            op("DepthToSpace", [op("Concat", parts, axis=1)], node.output[0], blocksize=s[0], mode="DCR")
        else:
            flat = op("Reshape", [node.input[0], const("flat", np.array([0, cin, -1], np.int64))])
            cols = op("MatMul", [const("w", w.reshape(cin, -1).T.copy()), flat])
            image = op("Mul", [op("Shape", [node.input[0]], start=2), const("stride", np.array(s, np.int64))])
            y = op("Col2Im", [cols, image, const("block", np.array(k, np.int64))], strides=s, pads=pads)
            op("Add", [y, const("b", bias.reshape(cout, 1, 1))], node.output[0])
            for o in proto.opset_import:
                if o.domain in ("", "ai.onnx"):
                    o.version = max(o.version, 18)  # Col2Im; the exports' other ops are the same in 18
        count += 1
    del g.node[:]
    g.node.extend(nodes)
    onnx_build._drop_dead(g)  # the replaced kernels and biases
    return count


if __name__ == "__main__":
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for mode in MODES:
        proto = onnx.load(str(source))
        n = rewrite(proto, mode)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(out / f"{source.stem}.{mode}.onnx"))
        print(f"{out / f'{source.stem}.{mode}.onnx'}: {n} ConvTranspose rewritten")
