"""`python -m zoo triton [MODEL ...] --out DIR`: a Triton Inference Server model repository from the exports.

One Triton model per exported graph, named `<model>_<graph>` (`gan_generator`, `rnn_step`, ...):
`DIR/<name>/config.pbtxt` and `DIR/<name>/1/model.onnx` (a copy of the export's graph), served by
Triton's ONNX Runtime backend. Standard library only: the configs are written as protobuf text.

- Every graph's first axis is its batch, and its rows never mix, so each model has `max_batch_size`
  and Triton batches requests of the same shapes together.
- Stateless graphs (gan generator, vae decoder/encoder, diffusion denoiser, pixelcnn network, the
  wavenet's condition and network, the transformer decoder) get `dynamic_batching`.
- Recurrent step graphs (rnn and lstm `step`, wavenet `step` and `prior_step`) get the sequence
  batcher with implicit state: each input `x` with an output `next_x` is a state that Triton keeps
  between the requests of one sequence (zeros at its start), so a client sends only the new token,
  sample or frame per request (with a sequence id, and start/end flags).
- The transformer decoder keeps its cache explicit (`past_key_values.*` in, `present.*` out): a
  buffer of fixed capacity (zeros at first) into which each request writes its new positions' keys
  and values at `position_ids`; a client that holds it can also branch or replay a prefix. Triton's
  implicit state could carry it (a fixed shape, zeros at a sequence's start), but that could not be
  tried without a server here.
- A graph that uses ONNX Runtime's contrib ops and has a `standard` variant (the transformer decoder's
  GroupQueryAttention) is served as that variant, in ONNX's standard ops: Triton's dynamic batcher
  puts different clients' requests of the same shapes into one batch, and the contrib op refuses a
  batch of several sequences that each add several positions after cached ones (the standard graph
  has no such rule); its CUDA kernel has no float32 either. `--contrib-ops` serves the graph itself
  (1.33-1.46x faster a step in ONNX Runtime on the CPU) for clients that never send such batches.
- `instance_group` is KIND_CPU; `--gpu` writes KIND_GPU (onnxruntime's CUDA provider in Triton).
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

from zoo.registry import MODELS  # no TensorFlow: the registry imports model modules lazily

DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
              "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
MAX_BATCH = 64  # rows per batched execution: enough to fill a CPU's cores on these small graphs
SEQUENCE_IDLE_US = 60_000_000  # a sequence (its state) is dropped after a minute without requests


def state_pairs(graph: dict) -> list:
    """[(input, output)] for every input `x` whose output `next_x` exists: the graph's recurrent state."""
    outputs = {o["name"] for o in graph["outputs"]}
    return [(i["name"], "next_" + i["name"]) for i in graph["inputs"] if "next_" + i["name"] in outputs]


def _dims(shape: list) -> list:
    """A manifest shape without its batch axis -> Triton dims (-1 for a named axis)."""
    return [d if isinstance(d, int) else -1 for d in shape[1:]]


def _tensor(spec: dict) -> str:
    dims = _dims(spec["shape"])
    lines = [f'    name: "{spec["name"]}"', f'    data_type: {DATA_TYPES[spec["dtype"]]}']
    if dims:
        lines.append(f"    dims: [ {', '.join(map(str, dims))} ]")
    else:  # one value per row: Triton wants dims [1], the graph sees [batch]
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    return "  {\n" + "\n".join(lines) + "\n  }"


def graph_config(name: str, graph: dict, gpu: bool = False, max_batch: int = MAX_BATCH) -> str:
    """config.pbtxt for one exported graph (a manifest's `graphs[...]` entry)."""
    for spec in graph["inputs"] + graph["outputs"]:
        if not spec["shape"] or spec["shape"][0] != "batch":
            raise ValueError(f"{name}: {spec['name']} has no leading batch axis ({spec['shape']})")
        if spec["dtype"] not in DATA_TYPES:
            raise ValueError(f"{name}: {spec['name']} has dtype {spec['dtype']}, which Triton's table here lacks")
    pairs = state_pairs(graph)
    state_names = {n for pair in pairs for n in pair}
    inputs = [i for i in graph["inputs"] if i["name"] not in state_names]
    outputs = [o for o in graph["outputs"] if o["name"] not in state_names]
    lines = [f'name: "{name}"', 'backend: "onnxruntime"', f"max_batch_size: {max_batch}",
             "input [\n" + ",\n".join(map(_tensor, inputs)) + "\n]",
             "output [\n" + ",\n".join(map(_tensor, outputs)) + "\n]"]
    if pairs:
        specs = {i["name"]: i for i in graph["inputs"]}
        states = []
        for inp, out in pairs:
            spec = specs[inp]
            dims = ", ".join(map(str, _dims(spec["shape"])))
            states.append("    {\n"
                          f'      input_name: "{inp}"\n      output_name: "{out}"\n'
                          f"      data_type: {DATA_TYPES[spec['dtype']]}\n      dims: [ {dims} ]\n"
                          "      initial_state: {\n"
                          f"        data_type: {DATA_TYPES[spec['dtype']]}\n        dims: [ {dims} ]\n"
                          f'        zero_data: true\n        name: "zeros"\n      }}\n'
                          "    }")
        lines.append("sequence_batching {\n"
                     f"  max_sequence_idle_microseconds: {SEQUENCE_IDLE_US}\n"
                     "  oldest { max_candidate_sequences: 1024 }\n"
                     "  state [\n" + ",\n".join(states) + "\n  ]\n}")
    else:
        lines.append("dynamic_batching { }")
    lines.append(f"instance_group [ {{ count: 1, kind: {'KIND_GPU' if gpu else 'KIND_CPU'} }} ]")
    return "\n".join(lines) + "\n"


def served_file(graph: dict, contrib_ops: bool = False) -> str:
    """The ONNX file of a manifest graph that Triton serves: its `standard` variant where the graph
    needs contrib ops and has one (unless `contrib_ops`), else the graph's own file."""
    standard = graph.get("variants", {}).get("standard")
    if graph.get("domains") and standard and not contrib_ops:
        return standard["onnx"]
    return graph["onnx"]


def write_repository(export_dirs: list, out, gpu: bool = False, contrib_ops: bool = False) -> list:
    """Write a model repository for the given export folders into `out`: the model names."""
    out = Path(out)
    names = []
    for folder in map(Path, export_dirs):
        manifest = json.loads((folder / "manifest.json").read_text())
        for graph_name, graph in manifest["graphs"].items():
            name = f"{manifest['model']}_{graph_name}"
            config = graph_config(name, graph, gpu)
            target = out / name
            (target / "1").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / served_file(graph, contrib_ops), target / "1" / "model.onnx")
            (target / "config.pbtxt").write_text(config)
            names.append(name)
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo triton", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="models to include (default: every one with an export)")
    parser.add_argument("--exports", default="exports", help="the folder holding exports/<model>/")
    parser.add_argument("--out", required=True, help="the model repository to write (Triton's --model-repository)")
    parser.add_argument("--gpu", action="store_true", help="instance_group KIND_GPU instead of KIND_CPU")
    parser.add_argument("--contrib-ops", action="store_true",
                        help="serve a graph with ONNX Runtime's contrib ops (the transformer decoder's "
                             "GroupQueryAttention) rather than its standard-ops variant: faster a step, "
                             "but it refuses a batch of sequences that each add several positions after cached ones")
    args = parser.parse_args(argv)
    models = args.models or [m for m in MODELS if (Path(args.exports) / m / "manifest.json").exists()]
    missing = [m for m in models if not (Path(args.exports) / m / "manifest.json").exists()]
    if missing:
        print(f"error: no export for {', '.join(missing)} in {args.exports}/ (train or export it first)", file=sys.stderr)
        return 2
    for name in write_repository([Path(args.exports) / m for m in models], args.out, args.gpu, args.contrib_ops):
        print(f"wrote {args.out}/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
