"""Probes behind the figures in the wavenet model card that are not `make eval-wavenet` metrics.

    python scripts/wavenet_probes.py temperature EXPORT --clips 100 --temperatures 1,0.8,0.6 \
        --out scripts/records/wavenet_probes.jsonl

`temperature`: the judge's accuracy on the vocoder's re-synthesis of held-out clips (their own
log-mel frames) at several softmax temperatures of the vocoder, and the mean absolute log-mel
difference between each re-synthesis and the frames it was given (the vocoder's drift).
The same clips (10 per digit of the test speaker, first ones) for every temperature; one seed.
With one temperature (1) it compares vocoders: exports of short probe trainings, e.g.

    python -m zoo train wavenet --no-eval --set epochs=4 --set prior_units=8 --set prenet_units=8 \
        --set prior_batch_size=4 --set frame_channels=256      # a tiny prior: the vocoder's time alone
    python scripts/wavenet_probes.py temperature "runs/wavenet/default+epochs=4,.../export" --temperatures 1

`--out` appends one JSON line per run (the export's config and the rows) to a record file.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def held_out(cfg, clips_per_digit):
    from zoo.models import wavenet

    clips, digits = wavenet.split_clips(cfg)["test"]
    pick = np.concatenate([np.flatnonzero(digits == d)[:clips_per_digit] for d in range(10)])
    return [clips[i] for i in pick], digits[pick]


def resynthesize_batch(export, clips, digits, temperature, seed):
    """All clips at once through the export's condition + step graphs: float clips."""
    from zoo.runtime import audio

    lengths = [len(c) for c in clips]
    frames = np.full((len(clips), max(-(-n // audio.HOP) for n in lengths), audio.MEL_BINS), audio.SILENT_FRAME,
                     np.float32)
    for i, c in enumerate(clips):
        m = audio.log_mel(c)
        frames[i, : len(m)] = m
    _, condition_fn, step = audio._onnx_stages(export, len(clips))
    codes = audio.vocode(step, np.asarray(condition_fn(frames, digits)), frames.shape[1] * audio.HOP, temperature,
                         np.random.default_rng(seed))
    out = audio.mu_law_decode(codes)
    return [out[i, :n] for i, n in enumerate(lengths)], frames


def drift(clips, frames):
    from zoo.runtime import audio

    gaps = []
    for c, f in zip(clips, frames):
        m = audio.log_mel(c)
        n = min(len(m), len(f))
        gaps.append(np.abs(m[:n] - f[:n]).mean())
    return float(np.mean(gaps))


def temperature(args):
    from zoo import registry
    from zoo.metrics import audio_classifier
    from zoo.runtime import load

    cfg = registry.preset("wavenet", "default", [])
    export = load(args.export)
    clips, digits = held_out(cfg, args.clips // 10)
    judge = audio_classifier.load(cfg)
    rows = []
    for t in [float(x) for x in args.temperatures.split(",")]:
        out, frames = resynthesize_batch(export, clips, digits, t, args.seed)
        rows.append({"temperature": t, "clips": len(clips),
                     "resynthesis_digit_accuracy": float((judge.labels(out) == digits).mean()),
                     "log_mel_drift": drift(out, frames)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="probe", required=True)
    p = sub.add_parser("temperature")
    p.add_argument("export")
    p.add_argument("--clips", type=int, default=100)
    p.add_argument("--temperatures", default="1,0.8,0.6")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = {"temperature": temperature}[args.probe](args)
    if args.out:
        manifest = json.loads((Path(args.export) / "manifest.json").read_text())
        record = {"probe": args.probe, "argv": sys.argv[1:], "export_config": manifest.get("config"),
                  "export_command": manifest.get("training", {}).get("command"), "rows": rows}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
