"""The transformer's decoding loop on one intra-op thread against all of them (2 here), and ONNX
Runtime GenAI's loop on the same folder: 256 greedy steps after a 64-token prefill, the loops
alternated 12 rounds in one process, median tokens per second, fp32 and int8.

    .venv/bin/python benchmarks/decoder_threads.py

zoo.runtime's CachedDecoder runs its steps on all threads; this is the measurement behind that
(record: benchmarks/compare-transformer-gqa.md)."""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zoo import runtime  # noqa: E402
from zoo.bench import SETTLE  # noqa: E402
from zoo.runtime import text  # noqa: E402

FOLDER = "exports/transformer"
STEPS, PROMPT, ROUNDS = 256, 64, 12


def decoder_loop(decoder, prompt):
    logits = decoder.prefill(prompt)
    start = time.perf_counter()
    for _ in range(STEPS):
        logits = decoder.step(logits.argmax(-1))
    return STEPS * len(prompt) / (time.perf_counter() - start)


def genai_loop(model, prompt):
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=PROMPT + STEPS, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    start = time.perf_counter()
    for _ in range(STEPS):
        generator.generate_next_token()
    return STEPS / (time.perf_counter() - start)


def main():
    export = runtime.load(FOLDER)
    try:
        import onnxruntime_genai as og

        genai = og.Model(FOLDER)
    except ImportError:
        genai = None
    for precision in ("fp32", "int8"):
        for batch in (1, 2, 4):
            prompt = np.random.default_rng(0).integers(0, len(export.runtime["vocabulary"]), (batch, PROMPT))
            loops = {}
            for name, threads in (("1 thread", 1), ("all threads", 0)):
                decoder = text.CachedDecoder(export, batch, precision)
                session = export.session(export.runtime["graph"], threads=threads, precision=precision)
                decoder._sessions = {"prefill": session, "step": session}
                loops[name] = lambda d=decoder: decoder_loop(d, prompt)
            if batch == 1 and precision == "fp32" and genai is not None:
                loops["GenAI"] = lambda: genai_loop(genai, prompt)
            rates = {name: [] for name in loops}
            for _ in range(ROUNDS):
                for name, loop in loops.items():
                    time.sleep(SETTLE)  # the previous loop's threads stop spinning
                    rates[name].append(loop())
            print(f"{precision} batch {batch}: " + ", ".join(f"{name} {np.median(r):,.0f}" for name, r in rates.items())
                  + " tokens/s", flush=True)


if __name__ == "__main__":
    main()
