"""`python -m zoo.serve` (make serve) as its users meet it: a subprocess on free loopback ports, called
over gRPC by Triton's own client, over REST by httpx and over completions by the official openai
client, and stopped with SIGTERM.

The server runs in .venv-serve (make serve-venv): KServe cannot be imported here, beside
tritonclient.grpc (the same `inference.*` protobuf names), and it pins protobuf<7.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, TEXT_MODELS
from zoo.serve.process import ServerProcess

EXPORTS = ROOT / "exports"
SERVE_PYTHON = Path(os.environ.get("ZOO_SERVE_PYTHON", ROOT / ".venv-serve" / "bin" / "python"))
START_TIMEOUT = 180  # seconds: eight exports verified and loaded on a busy 2-core machine
LINE = re.compile(r"^\S+ \S+ (zoo\.serve: \d+ models on .*|ray: .*|rest (GET|POST) \S+ (\d{3}|- \(client went away\)|\d{3} "
                  r"\(client went away\)) [\d.]+ ms|grpc \w+ \S* \w+ [\d.]+ ms)$")


class Server(ServerProcess):
    """The server for a test module, from .venv-serve: a skip where that venv is missing (a failure in CI)."""

    def __init__(self, tmp: Path, *args: str):
        if not SERVE_PYTHON.exists():
            message = f"{SERVE_PYTHON} is missing: make serve-venv builds it"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        super().__init__(SERVE_PYTHON, EXPORTS, ["--concurrency", "2", "--grace", "20", *args], tmp / "serve.log",
                         cwd=ROOT)

    def wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if self.ready():
                    return
            except RuntimeError as e:
                pytest.fail(str(e))
            time.sleep(0.5)
        pytest.fail(f"the server was not ready within {START_TIMEOUT} s:\n{self.log()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("serve"))
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def grpc_client(server):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}")


@pytest.fixture(scope="module")
def exports():
    from zoo.runtime import load

    return {m: load(EXPORTS / m) for m in ["rnn", "lstm", "transformer", "gan", "vae", "pixelcnn", "wavenet", "diffusion"]}


def grpc_infer(client, model: str, inputs: dict, outputs=None) -> dict:
    import tritonclient.grpc as grpcclient

    items = []
    for name, array in inputs.items():
        array = np.asarray(array)
        datatype = "BYTES" if array.dtype == object else {"float32": "FP32", "int32": "INT32", "int64": "INT64",
                                                          "uint8": "UINT8"}[array.dtype.name]
        item = grpcclient.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        items.append(item)
    requested = [grpcclient.InferRequestedOutput(n) for n in outputs] if outputs else None
    result = client.infer(model, items, outputs=requested)
    return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


def test_every_graph_over_grpc_and_rest_equals_export_run(server, grpc_client, exports):
    """Each graph as a v2 model under its Triton name, with Triton's shapes ([batch] as [batch, 1]),
    answers what Export.run answers on the export's own test inputs."""
    import httpx

    from zoo.export import read_test_inputs

    checked = []
    for model, export in exports.items():
        for graph, spec in export.manifest["graphs"].items():
            inputs = read_test_inputs(export.path / spec["test_data"])
            precision = "standard" if spec.get("domains") and "standard" in spec.get("variants", {}) else "fp32"
            want = export.run(graph, inputs, precision=precision)
            triton_form = {k: v.reshape(-1, 1) if v.ndim == 1 else v for k, v in inputs.items()}
            got = grpc_infer(grpc_client, f"{model}_{graph}", triton_form, [o["name"] for o in spec["outputs"]])
            assert set(got) == set(want)
            for name, value in want.items():
                value = value.reshape(-1, 1) if value.ndim == 1 else value
                assert got[name].shape == value.shape and got[name].dtype == value.dtype, name
                np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5, err_msg=f"{model}_{graph} {name}")
            checked.append(f"{model}_{graph}")
            if sum(v.size for v in inputs.values()) < 50_000:  # and over REST in JSON, where it stays small
                body = {"inputs": [{"name": k, "shape": list(v.shape), "datatype": {"float32": "FP32", "int32": "INT32",
                                    "int64": "INT64"}[v.dtype.name], "data": v.ravel().tolist()}
                                   for k, v in triton_form.items()]}
                response = httpx.post(f"{server.url}/v2/models/{model}_{graph}/infer", json=body, timeout=60)
                assert response.status_code == 200, response.text
                for out in response.json()["outputs"]:
                    value = want[out["name"]]
                    value = value.reshape(-1, 1) if value.ndim == 1 else value
                    assert out["shape"] == list(value.shape)
                    np.testing.assert_allclose(np.array(out["data"]).reshape(out["shape"]), value, rtol=1e-5, atol=1e-5)
    assert len(checked) == 12, checked
    meta = httpx.get(f"{server.url}/v2/models/gan_generator", timeout=10).json()
    assert {i["name"]: i["shape"] for i in meta["inputs"]} == {"z": [-1, 64], "label": [-1, 1]}


def test_triton_example_client_runs_unchanged(server, tmp_path, exports):
    out = tmp_path / "digits.npy"
    subprocess.run([sys.executable, str(ROOT / "examples" / "triton_client.py"), "images", "--url",
                    f"127.0.0.1:{server.grpc}", "--labels", "0,1,2", "--seed", "3", "--out", str(out)],
                   check=True, timeout=60)
    rng = np.random.default_rng(3)
    z = rng.standard_normal((3, 64)).astype(np.float32)
    want = exports["gan"].run("generator", {"z": z, "label": np.array([0, 1, 2], np.int32)})["image"]
    np.testing.assert_allclose(np.load(out), want, rtol=1e-5, atol=1e-5)


GENERATIONS = [  # model, request, what zoo.runtime is called with
    ("gan", {"labels": np.array([1, 9], np.int32), "per_label": np.array([3], np.int32), "seed": np.array([5], np.int64)},
     dict(labels=[1, 9], per_label=3, seed=5)),
    ("vae", {"labels": np.array([0], np.int32), "seed": np.array([2], np.int32)}, dict(labels=[0], per_label=8, seed=2)),
    ("pixelcnn", {"labels": np.array([7], np.int32), "per_label": np.array([1], np.int32)},
     dict(labels=[7], per_label=1, seed=0)),
    ("diffusion", {"labels": np.array([4, 2], np.int32), "per_label": np.array([1], np.int32),
                   "steps": np.array([3], np.int32), "sampler": np.array([b"ddim"], dtype=object),
                   "guidance": np.array([1.5], np.float32)},
     dict(labels=[4, 2], per_label=1, seed=0, steps=3, sampler="ddim", eta=0.0, guidance=1.5)),
]


@pytest.mark.parametrize("model,request_,runtime", GENERATIONS, ids=[g[0] for g in GENERATIONS])
def test_image_generation_equals_runtime(grpc_client, exports, model, request_, runtime):
    from zoo.runtime.images import sample_images

    got = grpc_infer(grpc_client, model, request_)
    images, labels = sample_images(exports[model], **runtime)
    assert got["images"].dtype == np.uint8 and np.array_equal(got["images"], images)
    assert list(got["labels"]) == list(labels)


def test_audio_generation_equals_runtime(grpc_client, exports):
    from zoo.runtime.audio import generate

    got = grpc_infer(grpc_client, "wavenet", {"digits": np.array([3, 8], np.int32), "seconds": np.array([0.3], np.float32),
                                              "seed": np.array([1], np.int64)})
    clips = generate(exports["wavenet"], [3, 8], float(np.float32(0.3)), 1.0, None, seed=1)
    assert list(got["lengths"]) == [len(c) for c in clips] and got["sample_rate"][0] == 8000
    for row, clip, n in zip(got["audio"], clips, got["lengths"]):
        np.testing.assert_allclose(row[:n], clip, atol=1e-6)
        assert not row[n:].any()


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_text_generation_and_completions_equal_runtime(server, grpc_client, exports, model):
    """The v2 text model, and completions (greedy; sampled and streamed) through the openai client."""
    from openai import OpenAI

    from zoo.runtime.text import sample_text

    got = grpc_infer(grpc_client, model, {"prompt": np.array([b"ROMEO:"], dtype=object), "length": np.array([40]),
                                          "seed": np.array([4]), "batch": np.array([2], np.int32)})
    want = sample_text(exports[model], "ROMEO:", 40, 0.8, 0, 4, batch=2)
    assert [t.decode() for t in got["text"]] == want

    client = OpenAI(base_url=server.url + "/openai/v1", api_key="unused", max_retries=0, timeout=60)
    greedy = client.completions.create(model=model, prompt="KING:", max_tokens=60, temperature=0)
    assert greedy.choices[0].text == sample_text(exports[model], "KING:", 60, 0.0, 0, 0)[0][len("KING:"):]
    assert greedy.usage.completion_tokens == 60
    stream = client.completions.create(model=model, prompt="KING:", max_tokens=50, temperature=1.0, seed=7,
                                       stream=True, extra_body={"top_k": 5})
    pieces = [c.choices[0].text for c in stream]
    assert len(pieces) >= 50  # a character an event (and an empty last one)
    assert "".join(pieces) == sample_text(exports[model], "KING:", 50, 1.0, 5, 7)[0][len("KING:"):]
    assert [m.id for m in client.models.list().data] == TEXT_MODELS


def test_stream_arrives_while_generating_and_a_client_that_leaves_stops_it(server):
    """The first event arrives while the response is still open, and the server ends a stream whose client
    went away (its log line says so) instead of generating the rest."""
    import httpx

    body = {"model": "transformer", "prompt": "ROMEO:", "max_tokens": 200_000, "stream": True}
    with httpx.stream("POST", server.url + "/openai/v1/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        first = next(response.iter_lines())
    assert first.startswith("data: ") and json.loads(first[6:])["choices"][0]["finish_reason"] is None
    deadline = time.monotonic() + 20
    while "completions 200 (client went away)" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "completions 200 (client went away)" in server.log(), server.log()[-2000:]
    short = httpx.post(server.url + "/openai/v1/completions", json={"model": "rnn", "prompt": "A", "max_tokens": 5},
                       timeout=30)
    assert short.status_code == 200 and len(short.json()["choices"][0]["text"]) == 5


def bad_requests():
    """(url path, body or raw bytes, what the reason must name): mistakes a client could make."""
    z = [0.1] * 64
    v2 = lambda *inputs: {"inputs": list(inputs)}  # noqa: E731
    t = lambda name, shape, datatype, data: {"name": name, "shape": shape, "datatype": datatype, "data": data}  # noqa: E731
    return [
        ("/v2/models/nope/infer", v2(t("z", [1], "FP32", [1])), "nope"),
        ("/v2/models/gan_generator/infer", v2(t("z", [1, 64], "FP32", z)), "label"),
        ("/v2/models/gan_generator/infer", v2(t("z", [1, 64], "FP32", z), t("lable", [1, 1], "INT32", [3])), "lable"),
        ("/v2/models/gan_generator/infer", v2(t("z", [1, 64], "INT32", [1] * 64), t("label", [1, 1], "INT32", [3])), "z"),
        ("/v2/models/gan_generator/infer", v2(t("z", [1, 63], "FP32", z[:63]), t("label", [1, 1], "INT32", [3])), "z"),
        ("/v2/models/gan_generator/infer", v2(t("z", [1, 64], "FP32", z), t("label", [1, 1], "INT32", [10])), "label"),
        ("/v2/models/gan_generator/infer", v2(t("z", [2, 64], "FP32", z), t("label", [2, 1], "INT32", [3, 4])), "z"),
        ("/v2/models/gan_generator/infer", v2(t("z", [1, 64], "FP32", ["x"] * 64), t("label", [1, 1], "INT32", [3])), "z"),
        ("/v2/models/rnn_step/infer", v2(t("tokens", [1, 1], "INT32", [99]), t("state", [1, 640], "FP32", [0] * 640)),
         "tokens"),
        ("/v2/models/gan/infer", v2(t("labels", [2], "INT32", [3, 14])), "labels"),
        ("/v2/models/gan/infer", v2(t("labels", [1], "FP32", [3])), "labels"),
        ("/v2/models/gan/infer", v2(t("per_label", [1], "INT32", [-2])), "per_label"),
        ("/v2/models/gan/infer", v2(t("per_label", [1], "INT64", [10 ** 12])), "batch"),
        ("/v2/models/gan/infer", v2(t("seeed", [1], "INT64", [1])), "seeed"),
        ("/v2/models/diffusion/infer", v2(t("sampler", [1], "BYTES", ["euler"])), "sampler"),
        ("/v2/models/diffusion/infer", v2(t("steps", [1], "INT32", [0])), "steps"),
        ("/v2/models/wavenet/infer", v2(t("digits", [1], "INT32", [12])), "digits"),
        ("/v2/models/wavenet/infer", v2(t("seconds", [1], "FP32", [1e9])), "seconds"),
        ("/v2/models/rnn/infer", v2(t("prompt", [1], "BYTES", ["ROMEO€"])), "vocabulary"),
        ("/v2/models/rnn/infer", v2(t("length", [1], "INT32", [-1])), "length"),
        ("/v2/models/transformer/infer", v2(t("batch", [1], "INT32", [0])), "batch"),
        ("/v2/models/gan/infer", b'{"inputs": [', "JSON"),
        ("/openai/v1/completions", b"{not json", "JSON"),
        ("/openai/v1/completions", {"model": "gan", "prompt": "A"}, "gan"),
        ("/openai/v1/completions", {"model": "rnn", "prompt": ""}, "prompt"),
        ("/openai/v1/completions", {"model": "rnn", "prompt": "A", "max_tokens": -3}, "max_tokens"),
        ("/openai/v1/completions", {"model": "rnn", "prompt": "A", "temperature": "hot"}, "temperature"),
        ("/openai/v1/completions", {"model": "rnn", "prompt": "A", "max_tokens": 10 ** 12}, "bytes"),
        ("/openai/v1/completions", {"model": "rnn", "prompt": "A", "logprobs": 3}, "logprobs"),
        ("/openai/v1/completions", {"model": "transformer", "prompt": "{}"}, "vocabulary"),
    ]


def test_bad_requests_get_a_4xx_naming_the_input_and_good_ones_still_right(server, exports):
    import httpx

    from zoo.runtime.images import sample_images

    want, _ = sample_images(exports["gan"], [5], 2, 11)
    good = {"inputs": [{"name": "labels", "shape": [1], "datatype": "INT32", "data": [5]},
                       {"name": "per_label", "shape": [1], "datatype": "INT32", "data": [2]},
                       {"name": "seed", "shape": [1], "datatype": "INT64", "data": [11]}]}
    cases = bad_requests()
    rng = np.random.default_rng(0)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i in range(300):
            path, body, names = cases[int(rng.integers(len(cases)))]
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            r = client.post(path, content=content, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
            assert names.lower() in r.text.lower() and r.text.count("\n") <= 1, (path, body, r.text)
            if i % 3 == 0:
                r = client.post("/v2/models/gan/infer", json=good)
                assert r.status_code == 200, r.text
                out = r.json()["outputs"][0]
                assert np.array_equal(np.array(out["data"], np.uint8).reshape(out["shape"]), want)
        huge = client.post("/v2/models/gan/infer", content=b"x" * (65 << 20), headers={"content-type": "application/json"})
        assert huge.status_code == 413 and "--max-request-bytes" in huge.text
        assert client.get("/v2/health/ready").status_code == 200


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(server):
    """Run last in this module: it stops the module's server. Also checks the log: a line of start-up,
    then one line per request."""
    import httpx

    result = {}

    def long_request():
        body = {"model": "transformer", "prompt": "ROMEO:", "max_tokens": 3000, "temperature": 0}
        result["response"] = httpx.post(server.url + "/openai/v1/completions", json=body, timeout=60)

    thread = threading.Thread(target=long_request)
    thread.start()
    time.sleep(0.5)  # the request is being computed
    server.proc.send_signal(signal.SIGTERM)
    thread.join(timeout=60)
    assert server.proc.wait(timeout=40) == 0, server.log()[-3000:]
    response = result["response"]
    assert response.status_code == 200 and len(response.json()["choices"][0]["text"]) == 3000
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/v2/health/ready", timeout=5)
    lines = server.log().splitlines()
    assert sum("zoo.serve:" in line for line in lines) == 1
    odd = [line for line in lines if not LINE.match(line)]
    assert not odd, odd[:5]


def test_batched_calls_answer_each_request_with_its_own_rows(exports):
    """zoo.serve.batches (a replica's dynamic batcher's work): requests of several graphs and sizes, run
    as few calls as their shapes allow, give each request what its own call gives."""
    from zoo.serve import batches

    gan, vae = exports["gan"], exports["vae"]
    rng = np.random.default_rng(0)
    items, calls = [], []
    for rows in (1, 3, 40, 30, 2, 70, 1):  # in order, up to MAX_BATCH_ROWS = 64 a call; 70 rows run alone
        items.append(("generator", {"z": rng.standard_normal((rows, 64)).astype(np.float32),
                                    "label": rng.integers(0, 10, rows).astype(np.int32)}))
    items.append(("decoder", {"z": rng.standard_normal((2, 32)).astype(np.float32)}))

    class Counting:  # the export, counting its calls and their rows
        def __init__(self, export):
            self.export = export

        def run(self, graph, feed, check=True):
            calls.append((graph, len(next(iter(feed.values())))))
            return self.export.run(graph, feed, check=check)

    results = batches.run_together(Counting(gan), items[:-1])
    assert calls == [("generator", 44), ("generator", 32), ("generator", 70), ("generator", 1)], calls
    for (graph, feed), got in zip(items[:-1], results):
        want = gan.run(graph, feed)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
    calls.clear()
    (decoded,) = batches.run_together(Counting(vae), items[-1:])
    assert calls == [("decoder", 2)]
    np.testing.assert_allclose(decoded["probabilities"], vae.run("decoder", items[-1][1])["probabilities"],
                               rtol=1e-5, atol=1e-6)


def replica_pids(server: Server, app: str) -> list:
    """The pids of the server's replicas of `app` (its Ray cluster's processes descend from it)."""
    out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True, check=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()[1:]]
    parent = {int(pid): int(ppid) for pid, ppid, *_ in rows}

    def descends(pid):
        while pid > 1:
            if pid == server.proc.pid:
                return True
            pid = parent.get(pid, 0)
        return False

    return [int(pid) for pid, _, args in (r + [""] * (3 - len(r)) for r in rows)
            if f"ServeReplica:{app}:" in args and descends(int(pid))]


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    """The server with gan's and rnn's models in two Ray Serve replicas each, batching on."""
    s = Server(tmp_path_factory.mktemp("replicas"), "--models", "gan,rnn", "--replicas", "2")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def test_replicas_answer_as_the_runtime_does_under_concurrent_load(replicated, exports):
    """16 clients at once: the batched gan_generator answers each with its own rows; gan's generation,
    rnn's completions (greedy and streamed) equal zoo.runtime's."""
    import httpx
    import tritonclient.grpc as grpcclient
    from concurrent.futures import ThreadPoolExecutor

    from zoo.runtime.images import sample_images
    from zoo.runtime.text import sample_text

    gan = exports["gan"]

    def one(k):
        rng = np.random.default_rng(k)
        z = rng.standard_normal((1 + k % 3, 64)).astype(np.float32)
        label = (np.arange(len(z)) + k).astype(np.int32) % 10
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{replicated.grpc}")
        got = grpc_infer(client, "gan_generator", {"z": z, "label": label.reshape(-1, 1)})["image"]
        return np.abs(got - gan.run("generator", {"z": z, "label": label})["image"]).max()

    with ThreadPoolExecutor(16) as pool:
        assert max(pool.map(one, range(320))) < 1e-5
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{replicated.grpc}")
    got = grpc_infer(client, "gan", {"labels": np.array([2, 7], np.int32), "seed": np.array([9])})
    assert np.array_equal(got["images"], sample_images(gan, [2, 7], 8, 9)[0])
    body = {"model": "rnn", "prompt": "ROMEO:", "max_tokens": 80, "temperature": 0}
    greedy = httpx.post(replicated.url + "/openai/v1/completions", json=body, timeout=60).json()
    assert greedy["choices"][0]["text"] == sample_text(exports["rnn"], "ROMEO:", 80, 0.0)[0][6:]
    with httpx.stream("POST", replicated.url + "/openai/v1/completions", timeout=60,
                      json={**body, "stream": True, "temperature": 0.8, "seed": 3}) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    assert "".join(e["choices"][0]["text"] for e in events) == sample_text(exports["rnn"], "ROMEO:", 80, 0.8, 0, 3)[0][6:]
    bad = httpx.post(replicated.url + "/v2/models/gan/infer", timeout=30,
                     json={"inputs": [{"name": "labels", "shape": [1], "datatype": "INT32", "data": [12]}]})
    assert bad.status_code == 400 and "labels" in bad.json()["error"]


def test_a_replica_killed_under_load_fails_only_its_requests_and_comes_back(replicated):
    import tritonclient.grpc as grpcclient

    assert len(replica_pids(replicated, "gan")) == 2
    results, stop = [], time.monotonic() + 20

    def load(k):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{replicated.grpc}")
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                grpc_infer(client, "gan", {"labels": np.array([k % 10], np.int32)})
                results.append((started, None))
            except Exception as e:  # noqa: BLE001 - what the client sees is the point
                results.append((started, str(e)))

    threads = [threading.Thread(target=load, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    time.sleep(3)
    victim, killed = replica_pids(replicated, "gan")[0], time.monotonic()
    os.kill(victim, signal.SIGKILL)
    for t in threads:
        t.join(timeout=60)
    failed = [(round(started - killed, 2), error) for started, error in results if error]
    assert all("StatusCode.INTERNAL" in error for _, error in failed), failed[:3]
    # the requests it held, or sent before Ray Serve's router learned of its death (bounded, whatever the load)
    assert all(when < 10 for when, _ in failed), failed
    assert sum(started > killed + 10 and error is None for started, error in results) > 20  # later ones answered
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = replica_pids(replicated, "gan")
        if len(now) == 2 and victim not in now:
            break
        time.sleep(1)
    now = replica_pids(replicated, "gan")
    assert len(now) == 2 and victim not in now


def test_sigterm_stops_the_replicas_too(replicated):
    replicas = replica_pids(replicated, "gan") + replica_pids(replicated, "rnn")
    assert len(replicas) == 4
    replicated.proc.send_signal(signal.SIGTERM)
    assert replicated.proc.wait(timeout=90) == 0, replicated.log()[-3000:]

    def alive(pid):  # a zombie has exited: only its parent has not collected it
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 30
    while any(map(alive, replicas)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not [pid for pid in replicas if alive(pid)]
    odd = [line for line in replicated.log().splitlines() if not LINE.match(line)]
    assert not odd, odd[:5]
