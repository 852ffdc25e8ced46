"""The int8 variants' quantisation settings, measured: for each text model's shipped fp32 graph, each
setting of onnxruntime's `quantize_dynamic` that bears on integer saturation, its test loss (the
TFDS test split, scored as the export scores variants) on this CPU and on an AVX2-only CPU without
VNNI emulated by qemu, and its speed against fp32 on this CPU (one step at batch 1, alternated in
one process). Record: benchmarks/int8-choices.jsonl (a JSON line per model and setting) and
benchmarks/int8-choices.md.

    .venv/bin/python benchmarks/int8_choices.py [--models lstm,transformer] [--emulate EPYC-Rome]

Why: on x86-64 without VNNI, ONNX Runtime's u8s8 kernels multiply pairs of uint8 activations and
int8 weights into int16 sums (VPMADDUBSW), which saturate when both are large; VNNI's VPDPBUSD
sums into int32 and does not. 7-bit weights (`reduce_range`) or uint8 weights (u8u8 kernels, which
widen to int16 first) cannot saturate. `qemu-x86_64 -cpu EPYC-Rome` (Debian's qemu-user) runs the
scoring on an emulated AVX2 CPU with no AVX-512 and no VNNI, so MLAS picks its AVX2 kernels.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GRAPHS = {"lstm": "step", "transformer": "decoder"}
# name -> quantize_dynamic keyword arguments beyond the op types (what zoo.export.int8_variant passes)
SETTINGS = {
    "s8": {},
    "s8-reduce-range": {"reduce_range": True},
    "s8-per-channel": {"per_channel": True},
    "s8-per-channel-reduce-range": {"per_channel": True, "reduce_range": True},
    "u8": {"weight_type": "QUInt8"},
}


def score(model: str, path: str, ids_file: str, export_dir: str = None) -> float:
    """Test nats/char of the ONNX file at `path` (a graph of the export in `export_dir`, by default the
    shipped one), scored as the export scores its variants."""
    import onnxruntime as ort

    from zoo.models import text
    from zoo.runtime import load

    ids = np.load(ids_file)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    if model == "transformer":
        from zoo.models.transformer import windowed_nll_onnx

        info = load(export_dir or ROOT / "exports" / model, verify=False).runtime
        return windowed_nll_onnx(session, ids, info)["nats_per_char"]
    sizes = [(i.name, i.shape[1]) for i in session.get_inputs() if i.name != "tokens"]
    return text.recurrent_nll_onnx(session, ids, sizes)


def emulated(cpu: str, function: str, *args):
    """`function(*args)` of this script, run in a child process under qemu-x86_64 -cpu `cpu`."""
    code = ("import sys, json; sys.path.insert(0, 'benchmarks'); import int8_choices; "
            f"print(json.dumps(int8_choices.{function}(*json.loads(sys.argv[1]))))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    result = subprocess.run(["qemu-x86_64", "-cpu", cpu, sys.executable, "-c", code, json.dumps(args)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=7200)
    if result.returncode:
        raise RuntimeError(f"qemu run failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def scores(model: str, paths: list, ids_file: str, export_dir: str = None) -> list:
    """`score` of each file."""
    return [score(model, p, ids_file, export_dir) for p in paths]


def tiny(emulate: str, record: str, settings: list):
    """The tests' tiny lstm and transformer (trained on tfds.testing.mock_data, as tests/conftest.py
    trains them), each setting's test loss on the mock test split and largest output difference from
    fp32 on the export's test data, on this CPU and on the emulated one: what the tests check."""
    from tests.conftest import mock_data
    from zoo import data as zdata, registry
    from zoo.evaluate import evaluate
    from zoo.export import export, quantize_int8
    from zoo.runtime.core import cpu_features
    from zoo.train import train

    tmp = Path(tempfile.mkdtemp(prefix="int8-tiny-"))
    try:
        for model, graph in GRAPHS.items():
            cfg = registry.preset(model, "tiny")
            with mock_data():
                trained = train(model, cfg, "tiny", tmp / model / "run", verbose=0)
                evaluate(model, cfg, tmp / model / "run")
                ids = zdata.encode(zdata.load_text(cfg.dataset, "test"), trained.vocabulary)
            folder = export(model, tmp / model / "run", tmp / model / "export")
            np.save(tmp / f"{model}-ids.npy", ids)
            fp32 = str(folder / f"{graph}.onnx")
            paths = [fp32]
            for name in settings:
                paths.append(str(tmp / f"{model}-{name}.onnx"))
                quantize_int8(fp32, paths[-1], {"op_types": GRAPH_OPS[model], **SETTINGS[name]})
            job = [model, str(folder), graph, paths, str(tmp / f"{model}-ids.npy")]
            here = tiny_scores(*job)
            there = emulated(emulate, "tiny_scores", *job) if emulate else None
            for i, name in enumerate(["fp32"] + settings):
                row = {"model": f"{model} (tiny preset, mock data)", "graph": graph, "setting": name,
                       "test_nats_per_char": {"here": here[i][0], f"qemu {emulate}": there[i][0] if there else None},
                       "max_abs_diff_vs_fp32": {"here": here[i][1],
                                                f"qemu {emulate}": there[i][1] if there else None},
                       "here_cpu": cpu_features(), "command": "python benchmarks/int8_choices.py --tiny"}
                print(json.dumps(row), flush=True)
                with open(record, "a") as f:
                    f.write(json.dumps(row) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tiny_scores(model, folder, graph, paths, ids_file) -> list:
    """[(test nats/char, largest output difference from the first file on the test data)] per file."""
    import onnxruntime as ort

    from zoo.export import read_test_inputs

    inputs = read_test_inputs(Path(folder) / "test_data" / graph / "test_data_set_0")
    outputs = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, inputs) for p in paths]
    return [(score(model, p, ids_file, folder), max(float(np.abs(a - b).max()) for a, b in zip(outputs[0], out)))
            for p, out in zip(paths, outputs)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lstm,transformer")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--emulate", default="EPYC-Rome", help="qemu CPU model without VNNI ('' to skip)")
    parser.add_argument("--emulated-chars", type=int, default=8192,
                        help="the emulated CPU scores this many characters of the test split (it runs ONNX "
                             "Runtime's kernels hundreds of times slower); this CPU scores them too, and the whole split")
    parser.add_argument("--record", default=str(ROOT / "benchmarks" / "int8-choices.jsonl"))
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny models instead of the shipped ones")
    args = parser.parse_args(argv)

    from zoo import data as zdata
    from zoo.bench import compare_graphs, machine
    from zoo.export import quantize_int8
    from zoo.runtime import load
    from zoo.runtime.core import cpu_features
    from zoo.train import package_versions

    emulate = args.emulate if args.emulate and shutil.which("qemu-x86_64") else ""
    if args.emulate and not emulate:
        print("qemu-x86_64 not found (apt-get install qemu-user): no emulated scores", file=sys.stderr)
    if args.tiny:
        return tiny(emulate, args.record, args.settings.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="int8-choices-"))
    try:
        for model in args.models.split(","):
            export, graph = load(ROOT / "exports" / model, verify=False), GRAPHS[model]
            ids_file, head_file = str(tmp / f"{model}-ids.npy"), str(tmp / f"{model}-head.npy")
            ids = zdata.encode(zdata.load_text(export.manifest["config"]["dataset"], "test"), export.runtime["vocabulary"])
            np.save(ids_file, ids)
            np.save(head_file, ids[: args.emulated_chars])
            head = f"first {min(len(ids), args.emulated_chars)} characters"
            op_types = export.graph(graph)["variants"]["int8"]["quantize_dynamic"]["op_types_to_quantize"] \
                if "quantize_dynamic" in export.graph(graph)["variants"]["int8"] else GRAPH_OPS[model]  # an export from before the settings were recorded
            fp32 = str(export.path / export.graph_file(graph))
            names = args.settings.split(",")
            files = {name: tmp / f"{model}-{name}.onnx" for name in names}
            for name in names:
                quantize_int8(fp32, files[name], {"op_types": op_types, **SETTINGS[name]})
            paths = [fp32] + [str(files[n]) for n in names]
            here, here_head = scores(model, paths, ids_file), scores(model, paths, head_file)
            there = emulated(emulate, "scores", model, paths, head_file) if emulate else [None] * len(paths)
            for i, name in enumerate(["fp32"] + names):
                row = {"model": model, "graph": graph, "setting": name,
                       "quantize_dynamic": None if name == "fp32" else {"op_types_to_quantize": list(op_types),
                                                                        **SETTINGS[name]},
                       "test_nats_per_char": {"here": here[i], f"here, {head}": here_head[i],
                                              f"qemu {emulate}, {head}": there[i]}}
                if name != "fp32":
                    speed = compare_graphs(fp32, str(files[name]), batch=1)
                    row["step_us_fp32_then_int8"] = {f"{n} threads": [round(t, 1) for t in speed[n]] for n in (1, 2)}
                    row["speedup"] = {f"{n} threads": round(speed[n][0] / speed[n][1], 2) for n in (1, 2)}
                row.update(here_cpu=cpu_features(), machine=machine(), packages=package_versions(),
                           emulated_cpu=f"qemu-x86_64 -cpu {emulate}: AVX2, no AVX-512, no VNNI" if emulate else None,
                           command="python benchmarks/int8_choices.py " + " ".join(argv or sys.argv[1:]))
                print(json.dumps({k: row[k] for k in ("model", "setting", "test_nats_per_char")}
                                 | {"speedup": row.get("speedup")}), flush=True)
                with open(args.record, "a") as f:
                    f.write(json.dumps(row) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(markdown(Path(args.record)))


GRAPH_OPS = {"lstm": ("LSTM", "MatMul"), "transformer": ("MatMul",)}


def markdown(record: Path) -> str:
    """The record's rows (the newest of each model and setting) as the tables of int8-choices.md."""
    rows = {}
    for line in record.read_text().splitlines():
        row = json.loads(line)
        rows[(row["model"], row["setting"])] = row
    out = []
    for model in dict.fromkeys(m for m, _ in rows):
        first = rows[(model, "fp32")]
        columns = list(first["test_nats_per_char"])
        diffs = "max_abs_diff_vs_fp32" in first
        head = ["setting"] + [f"test nats/char, {c}" for c in columns] + [f"emulated - {columns[-2]}"]
        head += [f"max abs diff vs fp32, {c}" for c in columns] if diffs else ["speed-up vs fp32, 1 / 2 threads"]
        out += [f"### {model}: {first['graph']}", "", "| " + " | ".join(head) + " |",
                "|---|" + "---:|" * (len(head) - 1)]
        for (m, setting), row in rows.items():
            if m != model:
                continue
            nats = [row["test_nats_per_char"][c] for c in columns]
            cells = [setting] + [f"{v:.5f}" if v is not None else "-" for v in nats]
            cells.append(f"{nats[-1] - nats[-2]:+.5f}" if None not in nats[-2:] else "-")
            if diffs:
                cells += [f"{row['max_abs_diff_vs_fp32'][c]:.4f}" if row["max_abs_diff_vs_fp32"][c] is not None else "-"
                          for c in columns]
            else:
                cells.append(" / ".join(f"{row['speedup'][k]:.2f}x" for k in ("1 threads", "2 threads"))
                             if row.get("speedup") else "-")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)

if __name__ == "__main__":
    main()
