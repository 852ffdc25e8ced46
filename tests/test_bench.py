"""`make bench`: its records, the benchmark page's tables written from them, and the image graph bench."""

import json

import numpy as np
import pytest

from tests.conftest import ROOT
from zoo import bench
from zoo.train import package_versions


def fake_export(folder):
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"model": "fake", "files": {"step.onnx": {"sha256": "0", "bytes": 1}}}')
    return folder


def test_a_record_becomes_the_readme_table(tmp_path):
    records = tmp_path / "records"
    rows = [("rnn", "ONNX Runtime", 1, 8819.4), ("rnn", "TF eager", 1, 10.25)]
    path = bench.write_record(records, "rnn", fake_export(tmp_path / "rnn"), {"recurrent": ("Chars", rows)},
                              "make bench ARGS=x")
    record = json.loads(path.read_text())
    assert record["tables"]["recurrent"]["rows"] == [["ONNX Runtime", 1, 8819.4], ["TF eager", 1, 10.25]]
    assert record["command"] == "make bench ARGS=x" and record["machine"]["cpus"] >= 1
    assert set(record["packages"]) == set(package_versions()) and len(record["export"]["manifest_sha256"]) == 64
    assert len(record["export"]["timed_files_sha256"]) == 64

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:recurrent -->\nold figures\n<!-- /bench:recurrent -->\n"
                      "<!-- bench:audio -->\n<!-- /bench:audio -->\nend\n")
    assert bench.update_readme(readme, records)
    text = readme.read_text()
    assert "| rnn | ONNX Runtime | 1 | 8,819 |" in text and "| rnn | TF eager | 1 | 10.2 |" in text
    assert "old figures" not in text and text.startswith("intro\n") and text.endswith("end\n")
    assert "`make bench ARGS=x`" in text and "(records/rnn.json)" in text
    assert "no record" in text.split("<!-- bench:audio -->")[1]  # a table without records says so
    assert not bench.update_readme(readme, records)  # written once, stable

    readme.write_text("<!-- bench:nonsense -->\n<!-- /bench:nonsense -->\n")
    with pytest.raises(ValueError, match="nonsense"):
        bench.update_readme(readme, records)


def test_benchmark_page_tables_are_the_committed_records(tmp_path):
    """Every table between bench markers in benchmarks/README.md is what `python -m zoo.bench --readme`
    writes from benchmarks/*.json: a figure edited by hand, or a record without its page update, fails."""
    page = ROOT / bench.PAGE
    copy = tmp_path / "README.md"
    copy.write_text(page.read_text())
    text = copy.read_text()
    for table_id in bench.TABLES:
        assert f"<!-- bench:{table_id} -->" in text, table_id
    records = bench.read_records(ROOT / bench.RECORDS)  # every model measured
    assert {r["model"] for r in records} >= {"rnn", "lstm", "transformer", "gan", "vae", "pixelcnn", "wavenet",
                                             "diffusion"}
    assert not bench.update_readme(copy, ROOT / bench.RECORDS, links=""), \
        "benchmarks/README.md's speed tables differ from benchmarks/*.json"
    assert "](rnn.json)" in text  # the page links to its records beside it


def test_every_record_measured_the_committed_export():
    """Each benchmarks/<model>.json names the digest of the export files it timed (bench.timed_files_sha256:
    graphs, test data, Keras model, SavedModel): a re-exported model fails until
    `make bench ARGS="--models <model>"` measures it again; a card or manifest rewritten over the same
    graphs, or a new int8 variant, which no benchmark runs, does not."""
    for record in bench.read_records(ROOT / bench.RECORDS):
        manifest = ROOT / record["export"]["folder"] / "manifest.json"
        assert manifest.is_file(), f"{record['model']}: the record's export {manifest} is missing"
        assert bench.timed_files_sha256(json.loads(manifest.read_text())) == record["export"]["timed_files_sha256"], (
            f"benchmarks/{record['model']}.json timed another export than exports/{record['model']}: "
            f"run make bench ARGS=\"--models {record['model']}\"")


def test_image_graph_bench_times_both_engines_on_the_same_inputs(trained):
    export = trained("gan")["export"]
    rows = bench.bench_graphs("gan", export, [1, 3], rounds=1, round_seconds=0.01)
    assert [(r[1], r[2]) for r in rows] == [("ONNX Runtime, generator", 1), ("TF tf.function, generator", 1),
                                             ("ONNX Runtime, generator", 3), ("TF tf.function, generator", 3)]
    assert all(r[3] > 0 and np.isfinite(r[3]) for r in rows)


def test_graph_inputs_follow_the_graph_signature(trained):
    from zoo import registry
    from zoo.models import load_model

    export = trained("pixelcnn")["export"]
    graph = registry.get("pixelcnn").export_graphs(load_model(export / "model.keras"))[0]
    feed = bench.graph_inputs(graph, 5, {"rows": 28}, np.random.default_rng(0))
    assert feed["image"].shape == (5, 28, 28, 1) and feed["image"].dtype == np.float32
    for name, (lo, hi) in graph.ranges.items():
        if name in feed:
            assert feed[name].min() >= lo and feed[name].max() < hi


def test_profile_sums_onnx_runtime_kernel_time_per_op_type(trained):
    import onnx

    export = trained("gan")["export"]
    rows = bench.profile_graph("gan", export, batch=2, runs=3)
    graph_ops = {n.op_type for n in onnx.load(str(export / "generator.onnx")).graph.node}
    assert rows and abs(sum(r[3] for r in rows) - 1.0) < 1e-6
    assert {r[0] for r in rows} & (graph_ops | {"FusedConv", "FusedGemm"})  # ONNX Runtime may fuse nodes
    assert all(r[1] >= 1 and r[2] > 0 for r in rows)
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)


@pytest.mark.parametrize("name, graph", [("transformer", "decoder"), ("rnn", "step")])
def test_compare_graphs_feeds_both_graphs_the_same_step(trained, name, graph):
    # `--compare-graphs` (the records of benchmarks/compare-*.md): a graph against itself gives the
    # same outputs, so both got the same inputs; a fixed-capacity decoder runs bound in place at the
    # capacity zoo.runtime would hold its `past` + 1 positions in, a graph without one unbound.
    from zoo.runtime.text import cpu_capacity

    path = trained(name)["export"] / f"{graph}.onnx"
    past = 5
    out = bench.compare_graphs(path, path, past=past, rounds=1, steps=3, threads=(1,))
    assert out["max_abs_diff"] == 0.0 and out["nodes"][0] == out["nodes"][1] > 0, out
    assert out["capacity"] == (cpu_capacity(past + 1) if name == "transformer" else None), out
    assert all(us > 0 for us in out[1]), out


def test_compare_graphs_keeps_the_arrays_it_binds_alive_while_it_times(trained, monkeypatch):
    # ONNX Runtime reads and writes a bound numpy array's memory: each must outlive the timed calls.
    import gc
    import weakref

    import onnxruntime as ort

    made, from_numpy, timed = [], ort.OrtValue.ortvalue_from_numpy, bench.alternated

    def recording(*args, **kwargs):
        value = from_numpy(*args, **kwargs)
        made.append(weakref.ref(value))
        return value

    def checking(*args, **kwargs):
        gc.collect()
        assert made and all(ref() is not None for ref in made), "an array bound for timing was freed before it"
        return timed(*args, **kwargs)

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy", recording)
    monkeypatch.setattr(bench, "alternated", checking)
    path = trained("transformer")["export"] / "decoder.onnx"
    bench.compare_graphs(path, path, past=5, rounds=1, steps=3, threads=(1,))


def test_lstm_rewrites_compute_the_shipped_step(trained, tmp_path):
    # benchmarks/lstm_rewrites.py (record benchmarks/compare-lstm-rewrites.md): the timed rewrites must be
    # the same step as the export's, from its own weights, or their speed-ups mean nothing; the If graph
    # keeps the step's any-length contract.
    import importlib.util

    import onnxruntime as ort

    spec = importlib.util.spec_from_file_location("lstm_rewrites", ROOT / "benchmarks" / "lstm_rewrites.py")
    rewrites = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rewrites)
    step = trained("lstm")["export"] / "step.onnx"
    rewrites.main(str(step), str(tmp_path))
    shipped = ort.InferenceSession(str(step), providers=["CPUExecutionProvider"])
    hidden, vocab = shipped.get_inputs()[1].shape[1], shipped.get_outputs()[0].shape[2]
    rng = np.random.default_rng(0)

    def feeds(batch, time):
        return {"tokens": rng.integers(0, vocab, (batch, time)).astype(np.int32),
                **{n: (rng.standard_normal((batch, hidden)) * 0.7).astype(np.float32) for n in rewrites.STATE}}

    for name, times in (("token", (1,)), ("if", (1, 5)), ("weights", ())):
        session = ort.InferenceSession(str(tmp_path / f"step.{name}.onnx"), providers=["CPUExecutionProvider"])
        for time in times:
            feed = feeds(3, time)
            for want, got in zip(shipped.run(None, feed), session.run(None, feed)):
                assert want.shape == got.shape and np.abs(want - got).max() < 1e-5, (name, time)
        assert [o.name for o in session.get_outputs()] == [o.name for o in shipped.get_outputs()]
