"""Load on `python -m zoo.serve` (make bench-serve): throughput and latency of the server's variants,
measured side by side in one run.

    .venv/bin/python benchmarks/serve_load.py [--seconds 5] [--rounds 2]

Starts the server four times at once on free loopback ports, each from .venv-serve on exports/ with
gan, diffusion and transformer: in one process (`--replicas 0`), in one Ray Serve replica an export with
dynamic batching (`--replicas 1`), the same with batching off (`--replicas 1 --max-batch 1`), and in two
replicas an export (`--replicas 2`). Then, for each target and concurrency, it loads each variant in
turn for `--seconds`, alternating them, `--rounds` times: N clients, each sending its next request when
the last one is answered, through Triton's asyncio gRPC client (`tritonclient.grpc.aio`) for the v2
models and httpx for completions. (Triton's own load generator, perf_analyzer, cannot be installed
here: the package index has only PyPI's empty `perf-analyzer` 0.1.0 placeholder.)

Targets: `gan_generator` (one image's noise a request), `gan` (one image a request, the whole loop on
the server), `diffusion` (one image, DDIM with 10 steps) and `transformer` completions (64 characters,
temperature 0.8, streamed; latency to the first and to the last character).

Before the servers start, it times the gan generator alone in ONNX Runtime at 1, 16 and 64 rows a call
(alternated, in this process): what dynamic batching could save on its calls.

Writes every window to benchmarks/serve.jsonl and the medians over rounds to benchmarks/serve.md.
"""

import argparse
import asyncio
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zoo.serve.process import ServerProcess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SERVE_PYTHON = ROOT / ".venv-serve" / "bin" / "python"
VARIANTS = {  # name -> the server's arguments
    "one process": ["--replicas", "0"],
    "1 replica batched": ["--replicas", "1"],
    "1 replica unbatched": ["--replicas", "1", "--max-batch", "1"],
    "2 replicas batched": ["--replicas", "2"],
}
TARGETS = ["gan_generator", "gan", "diffusion", "transformer completions"]
CONCURRENCY = [1, 4, 16]


class Server(ServerProcess):
    def __init__(self, name: str, args: list, log_dir: Path):
        self.name = name
        super().__init__(SERVE_PYTHON, ROOT / "exports", ["--models", "gan,diffusion,transformer", *args],
                         log_dir / f"serve-{name.replace(' ', '_')}.log", cwd=ROOT)

    def ready(self) -> bool:
        try:
            return super().ready()
        except RuntimeError as e:
            raise SystemExit(f"server {self.name}: {e}") from None


def v2_request(target: str, k: int):
    """(model, inputs) of the k-th request to a v2 target."""
    from tritonclient.grpc.aio import InferInput

    def tensor(name, array):
        item = InferInput(name, list(array.shape), {"float32": "FP32", "int32": "INT32", "int64": "INT64",
                                                    "object": "BYTES"}[array.dtype.name])
        item.set_data_from_numpy(array)
        return item

    if target == "gan_generator":
        z = np.random.default_rng(k).standard_normal((1, 64)).astype(np.float32)
        return target, [tensor("z", z), tensor("label", np.array([[k % 10]], np.int32))]
    inputs = [tensor("labels", np.array([k % 10], np.int32)), tensor("per_label", np.array([1], np.int32)),
              tensor("seed", np.array([k], np.int64))]
    if target == "diffusion":
        inputs += [tensor("steps", np.array([10], np.int32)), tensor("sampler", np.array([b"ddim"], dtype=object))]
    return target, inputs


async def client_loop(server: Server, target: str, until: float, k0: int, samples: list, errors: list):
    if target == "transformer completions":
        import httpx

        body = {"model": "transformer", "prompt": "ROMEO:", "max_tokens": 64, "temperature": 0.8, "stream": True}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http}", timeout=120) as client:
            k = k0
            while time.perf_counter() < until:
                start, first = time.perf_counter(), None
                try:
                    async with client.stream("POST", "/openai/v1/completions", json={**body, "seed": k}) as r:
                        async for line in r.aiter_lines():
                            if first is None and line.startswith("data: {"):
                                first = time.perf_counter() - start
                    if r.status_code != 200:
                        errors.append(r.status_code)
                    else:
                        samples.append((time.perf_counter() - start, first))
                except Exception as e:  # noqa: BLE001 - counted, not raised: the load goes on
                    errors.append(type(e).__name__)
                k += 1
        return
    from tritonclient.grpc.aio import InferenceServerClient

    client = InferenceServerClient(f"127.0.0.1:{server.grpc}")
    k = k0
    try:
        while time.perf_counter() < until:
            model, inputs = v2_request(target, k)
            start = time.perf_counter()
            try:
                await client.infer(model, inputs)
                samples.append((time.perf_counter() - start, None))
            except Exception as e:  # noqa: BLE001
                errors.append(type(e).__name__)
            k += 1
    finally:
        await client.close()


async def window(server: Server, target: str, concurrency: int, seconds: float) -> dict:
    samples, errors = [], []
    start = time.perf_counter()
    until = start + seconds
    await asyncio.gather(*[client_loop(server, target, until, 1000 * i, samples, errors) for i in range(concurrency)])
    elapsed = time.perf_counter() - start  # the last requests finish after `until`
    latencies = sorted(s[0] for s in samples)
    row = {"variant": server.name, "target": target, "concurrency": concurrency, "seconds": round(elapsed, 3),
           "requests": len(samples), "errors": len(errors), "per_second": len(samples) / elapsed,
           "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
           "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None}
    if target == "transformer completions" and samples:
        row["first_char_p50_ms"] = 1000 * statistics.median(s[1] for s in samples if s[1] is not None)
        row["chars_per_second"] = 64 * len(samples) / elapsed
    return row


def generator_alone(calls: int = 300, rounds: int = 3) -> dict:
    """{rows a call: ms a row} of the gan generator in ONNX Runtime (the server's default threads), the
    median over `rounds` of `calls` calls, the sizes alternated."""
    from zoo.runtime import load

    session = load(ROOT / "exports" / "gan").session("generator")
    times = {1: [], 16: [], 64: []}
    for _ in range(rounds):
        for rows in times:
            feed = {"z": np.random.default_rng(rows).standard_normal((rows, 64)).astype(np.float32),
                    "label": np.arange(rows, dtype=np.int32) % 10}
            for _ in range(10):
                session.run(None, feed)
            start = time.perf_counter()
            for _ in range(calls):
                session.run(None, feed)
            times[rows].append(1000 * (time.perf_counter() - start) / calls / rows)
    return {rows: statistics.median(t) for rows, t in times.items()}


def markdown(rows: list, meta: dict) -> str:
    lines = [f"# make serve under load ({meta['date']})", "",
             f"Command: `{meta['command']}` on {meta['cpu']} ({meta['cores']} cores), {meta['seconds']} s windows, "
             f"{meta['rounds']} rounds, variants alternated within each target and concurrency. Cells: the median over "
             "rounds of requests answered a second, and p50 / p99 latency in ms (transformer: completions of 64 "
             "characters; p50 latency to the first character in brackets). Errors: " +
             (", ".join(f"{r['variant']} {r['target']} c{r['concurrency']}: {r['errors']}" for r in rows if r["errors"])
              or "none") + ".", ""]
    by = {}
    for r in rows:
        by.setdefault((r["target"], r["concurrency"], r["variant"]), []).append(r)
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    lines += ["| target | clients | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    for target in dict.fromkeys(r["target"] for r in rows):
        for c in dict.fromkeys(r["concurrency"] for r in rows):
            cells = []
            for v in variants:
                group = by.get((target, c, v), [])
                if not group:
                    cells.append("")
                    continue
                med = lambda key: statistics.median(g[key] for g in group if g.get(key) is not None)  # noqa: E731
                cell = f"{med('per_second'):.1f}/s, {med('p50_ms'):.0f} / {med('p99_ms'):.0f} ms"
                if target == "transformer completions":
                    cell += f" ({med('first_char_p50_ms'):.0f})"
                cells.append(cell)
            lines.append(f"| {target} | {c} | " + " | ".join(cells) + " |")
    ratios = []
    for target in ("gan_generator", "gan"):
        on = [r["per_second"] for r in rows if (r["target"], r["concurrency"], r["variant"]) ==
              (target, 16, "1 replica batched")]
        off = [r["per_second"] for r in rows if (r["target"], r["concurrency"], r["variant"]) ==
               (target, 16, "1 replica unbatched")]
        if on and off:
            ratios.append(f"{target}: {statistics.median(on) / statistics.median(off):.2f}x "
                          f"(rounds: {', '.join(f'{a / b:.2f}x' for a, b in zip(on, off))})")
    if ratios:
        lines += ["", "Dynamic batching at 16 clients, one replica, batching on / off: " + "; ".join(ratios) + "."]
    if meta.get("generator_ms_a_row"):
        lines += ["", "The gan generator alone in ONNX Runtime, ms a row at 1 / 16 / 64 rows a call: " +
                  " / ".join(f"{v:.3f}" for v in meta["generator_ms_a_row"].values()) + "."]
    return "\n".join(lines) + "\n"


async def measure(servers: list, args) -> list:
    rows = []
    for target in args.targets:
        for c in args.concurrency:
            for rnd in range(args.rounds):
                order = servers if rnd % 2 == 0 else servers[::-1]  # alternate which variant goes first
                for server in order:
                    row = await window(server, target, c, args.seconds)
                    row["round"] = rnd
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="one measurement window")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks"), help="where serve.jsonl and serve.md go")
    args = parser.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    names = [v for v in args.variants.split(",") if v]
    if not SERVE_PYTHON.exists():
        raise SystemExit(f"{SERVE_PYTHON} is missing: make serve-venv")
    log_dir = Path(args.out) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    generator = generator_alone()
    print(f"gan generator alone, ms a row at 1 / 16 / 64 rows a call: {generator}", flush=True)
    servers = []
    try:
        for name in names:
            servers.append(Server(name, VARIANTS[name], log_dir))
            while not servers[-1].ready():  # one at a time: their start-ups would fight for the cores
                time.sleep(1)
        rows = asyncio.run(measure(servers, args))
    finally:
        for server in servers:
            server.stop()
    from zoo.runtime.core import cpu_features

    meta = {"date": datetime.date.today().isoformat(), "cpu": cpu_features()["cpu"], "cores": os.cpu_count(),
            "seconds": args.seconds, "rounds": args.rounds, "generator_ms_a_row": generator,
            "command": os.environ.get("ZOO_COMMAND") or "python benchmarks/serve_load.py " + " ".join(sys.argv[1:])}
    out = Path(args.out)
    with (out / "serve.jsonl").open("a") as f:
        for row in rows:
            f.write(json.dumps({**meta, **row}) + "\n")
    (out / "serve.md").write_text(markdown(rows, meta))
    print((out / "serve.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
