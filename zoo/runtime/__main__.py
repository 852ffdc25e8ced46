"""`python -m zoo.runtime sample EXPORT_DIR [options]`: needs only numpy and onnxruntime.

`python -m zoo sample MODEL [options]` (make sample-MODEL ARGS="...") is the same command on exports/MODEL.
"""

import argparse
import json
import sys

from zoo.runtime.core import ExportFileError, load


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.runtime", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print an export's manifest summary")
    info.add_argument("export_dir")
    s = sub.add_parser("sample", help="generate from an export")
    s.add_argument("export_dir")
    s.add_argument("--prompt", default=None, help="text models: the text to continue")
    s.add_argument("--length", type=int, default=None, help="text models: characters to generate")
    s.add_argument("--temperature", type=float, default=None)
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--batch", type=int, default=1, help="text models: independent samples")
    s.add_argument("--labels", default=None, help="image models: comma-separated class labels, one grid row each")
    s.add_argument("--per-label", type=int, default=None, help="image models: images per label")
    s.add_argument("--digits", default=None, help="audio models: comma-separated digits, one clip each")
    s.add_argument("--seconds", type=float, default=None,
                   help="audio models: the longest a clip may be (the model ends each word itself)")
    s.add_argument("--mel-temperature", type=float, default=None,
                   help="audio models: the noise of the log-mel prior (0: its likeliest frames)")
    s.add_argument("--vocoder", default="wavenet", choices=("wavenet", "griffin-lim"),
                   help="audio models: the WaveNet, or Griffin-Lim phase reconstruction of the prior's frames")
    s.add_argument("--sampler", default=None, choices=("ddim", "ddpm"), help="diffusion models: the sampler")
    s.add_argument("--steps", type=int, default=None, help="diffusion models: DDIM steps (DDPM runs all)")
    s.add_argument("--eta", type=float, default=None, help="diffusion models: DDIM noise (0: deterministic)")
    s.add_argument("--guidance", type=float, default=None,
                   help="diffusion models: classifier-free guidance scale (1: none)")
    s.add_argument("--out", default=None, help="image models: the PNG to write; audio models: the folder for .wav files")
    s.add_argument("--on-full", default="slide", choices=("slide", "refuse"),
                   help="models with a maximum context: slide the window, or refuse longer requests")
    s.add_argument("--precision", default="fp32", choices=("fp32", "int8", "standard"),
                   help="text models: a variant of the graph where the export has one (manifest: variants): int8, "
                        "or standard (the transformer's decoder in ONNX's standard ops only, fp32)")
    s.add_argument("--no-verify", action="store_true", help="skip the sha256 checks")
    args = parser.parse_args(argv)
    try:
        export = load(args.export_dir, verify=not getattr(args, "no_verify", False))
        if args.command == "info":
            m = export.manifest
            print(json.dumps({k: m.get(k) for k in ("model", "preset", "graphs", "metrics")}, indent=2))
            return 0
        kind = export.runtime.get("kind")
        defaults = export.runtime.get("sample_defaults", {})
        opts = {k: v if v is not None else defaults.get(k) for k, v in (
            ("prompt", args.prompt), ("length", args.length), ("temperature", args.temperature),
            ("top_k", args.top_k), ("seed", args.seed))}
        if kind in ("text-recurrent", "text-cached"):
            from zoo.runtime.text import sample_text

            for text in sample_text(export, batch=args.batch, on_full=args.on_full, precision=args.precision, **opts):
                print(text)
                if args.batch > 1:
                    print("-" * 40)
            return 0
        if args.precision != "fp32":
            raise ValueError(f"--precision {args.precision}: only text models have variants")
        from zoo.runtime.images import KINDS as IMAGE_KINDS

        if kind in IMAGE_KINDS:
            from zoo.runtime.images import write_grid

            sampler = {k: v for k, v in (("sampler", args.sampler), ("steps", args.steps), ("eta", args.eta),
                                         ("guidance", args.guidance)) if v is not None}
            path, _ = write_grid(export, args.out or defaults["out"], args.labels or defaults["labels"],
                                 defaults["per_label"] if args.per_label is None else args.per_label, opts["seed"],
                                 **sampler)
            print(f"wrote {path}")
            return 0
        if kind == "audio-generator":
            from zoo.runtime.audio import write_clips

            paths = write_clips(export, args.out or defaults["out"], args.digits or defaults["digits"],
                                defaults["seconds"] if args.seconds is None else args.seconds,
                                defaults["temperature"] if args.temperature is None else args.temperature,
                                defaults["mel_temperature"] if args.mel_temperature is None else args.mel_temperature,
                                opts["seed"], args.vocoder)
            for path in paths:
                print(f"wrote {path}")
            return 0
        print(f"error: no sampler for export kind {kind!r}", file=sys.stderr)
        return 2
    except ExportFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
