"""zoo.fuzz: thousands of calls of every graph of the shipped and the tiny exports, each in a worker
process (an abort of ONNX Runtime is a finding, not the end of the test), end either in a run or in
the runtime's one-line ValueError; none aborts, hangs or reaches ONNX Runtime's own errors."""

import json
from collections import Counter

import pytest

from tests.conftest import ROOT
from zoo import fuzz
from zoo.registry import MODELS

SHIPPED = sorted(p.parent for p in (ROOT / "exports").glob("*/manifest.json"))


def check(rows, calls):
    outcomes = Counter(r["outcome"] for r in rows)
    findings = [r for r in rows if r["outcome"] not in ("ok", "refused")]
    assert not findings, fuzz.summary(findings)
    assert len(rows) == calls
    # a search that exercises the graphs: many calls run, many are refused, every kind of mistake is made
    assert outcomes["ok"] > calls // 10 and outcomes["refused"] > calls // 2, outcomes
    assert set(r["mutation"] for r in rows) == set(fuzz.MUTATIONS)
    assert {(r["model"], r["graph"], r["precision"]) for r in rows if r["outcome"] == "ok"} == \
        {(r["model"], r["graph"], r["precision"]) for r in rows}  # every graph and variant ran at least once
    refused = [r["message"] for r in rows if r["outcome"] == "refused"]
    assert all(r["lines"] == 1 for r in rows if r["outcome"] == "refused")
    return refused


@pytest.mark.skipif(len(SHIPPED) < 8, reason="the shipped exports are not all here")
def test_the_search_over_the_shipped_exports_finds_no_abort_and_no_onnxruntime_error():
    refused = check(fuzz.search(SHIPPED, 3000, seed=0, timeout=30, stop_after=5), 3000)
    assert any("over this runtime's limit" in m for m in refused)  # the huge sizes are refused, not allocated
    assert any("must be at least 1" in m for m in refused)  # empty axes too
    assert any("past the cache's capacity" in m for m in refused)  # the decoder's positions


def test_the_search_over_the_tiny_exports_finds_no_abort_and_no_onnxruntime_error(trained):
    check(fuzz.search([trained(name)["export"] for name in MODELS], 1500, seed=1, timeout=30,
                      stop_after=5), 1500)


def test_an_abort_is_recorded_as_a_finding_and_the_search_goes_on(tmp_path, trained):
    """A worker that dies (here: one without the memory to import onnxruntime) is a finding per call,
    and the next call gets a new worker; the command line exits 1 and records every call."""
    rows = fuzz.search([trained("gan")["export"]], 3, timeout=60, memory_limit=64 << 20)
    assert [r["outcome"] for r in rows] == ["abort"] * 3
    assert all(r["message"].startswith("exit ") for r in rows)
    record = tmp_path / "calls.jsonl"
    assert fuzz.main([str(trained("gan")["export"]), "--calls", "2", "--record", str(record),
                      "--memory-limit", str(64 << 20)]) == 1
    assert [json.loads(line)["outcome"] for line in record.read_text().splitlines()] == ["abort"] * 2


def test_recipes_hold_no_arrays_and_name_every_input():
    import numpy as np

    spec = [{"name": "z", "dtype": "float32", "shape": ["batch", 64]},
            {"name": "label", "dtype": "int32", "shape": ["batch"], "range": [0, 10]}]
    rng = np.random.default_rng(0)
    for _ in range(200):
        case = fuzz.recipe(spec, rng)
        text = json.dumps(case)  # plain data: a huge shape costs nothing to send
        assert len(text) < 400 and case["mutation"] in fuzz.MUTATIONS
        if case["mutation"] not in ("missing", "extra"):
            assert set(case["inputs"]) == {"z", "label"}
