"""`python -m zoo {list,train,eval,export,sample} MODEL [--preset P] [--set key=value ...]`.

Mistakes in the request (unknown model, preset or key, a value of the wrong type) print one
line naming the valid choices and exit with code 2, before TensorFlow is started where possible.
"""

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from zoo import registry
from zoo.config import UsageError, ZooError, choose
from zoo.runtime.core import ExportFileError

EXIT_USAGE, EXIT_FAILURE = 2, 1
STRATEGIES = ("default", "mirrored", "multiworker")  # zoo.train.make_strategy's names
# What TensorFlow's C++ side prints when it starts on a machine without a GPU (absl writes it to
# stderr before its log is initialised, whatever TF_CPP_MIN_LOG_LEVEL says).
CHATTER = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} [\d:. ]+\d+ "
                     r"(port|cudart_stub|cuda_platform|cuda_executor|cpu_feature_guard|cpu_utils)\.cc:\d+\]|"
                     r"To enable the following instructions:)")


@contextlib.contextmanager
def filtered_native_stderr():
    """Runs the body with file descriptor 2 captured; afterwards prints what it caught, less CHATTER."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode("utf-8", "replace").splitlines():
                if not CHATTER.match(line):
                    print(line, file=sys.stderr)


def start_tensorflow():
    """Import TensorFlow and find the devices, without the start-up chatter."""
    with filtered_native_stderr():
        try:
            import tensorflow as tf
        except ImportError:  # the base install is the runtime alone
            raise SystemExit('error: training, evaluation and export need TensorFlow: pip install ".[train]" '
                             '(make venv installs it); sampling from an export needs only python -m zoo.runtime') from None

        tf.config.list_physical_devices()


def _overrides_name(changed: dict) -> str:
    """{'epochs': '4', 'lstm_units': '256'} -> 'epochs=4,lstm_units=256' (a folder name)."""
    import hashlib

    text = ",".join(f"{k}={v}" for k, v in sorted(changed.items()))
    safe = re.sub(r"[^A-Za-z0-9._=,-]", "_", text)
    return safe if len(safe) <= 80 else hashlib.sha1(text.encode()).hexdigest()[:12]


def run_dir_for(args) -> Path:
    """runs/MODEL/PRESET; a run with training overrides gets a folder of its own beside it."""
    if args.run_dir:
        return Path(args.run_dir)
    changed = registry.training_overrides(args.model, args.set)
    name = args.preset + (f"+{_overrides_name(changed)}" if changed else "")
    return Path("runs") / args.model / name


def shipped_export_dir(model: str, preset: str) -> Path:
    """exports/MODEL for the default preset, exports/MODEL-PRESET for another."""
    return Path("exports") / (model if preset == "default" else f"{model}-{preset}")


def export_dir_for(args) -> Path:
    """--out; else the preset's shipped_export_dir, and RUN_DIR/export for a run with training
    overrides: an experiment never replaces a shipped export."""
    if getattr(args, "out", None):
        return Path(args.out)
    if registry.training_overrides(args.model, args.set):
        return run_dir_for(args) / "export"
    return shipped_export_dir(args.model, args.preset)


def cmd_list(args):
    for name in registry.MODELS:
        print(name)
    return 0


def cmd_train(args):
    choose("strategy", args.strategy, STRATEGIES)
    if args.strategy == "multiworker":  # the strategy first: collective ops are configured before any op runs
        from zoo import distributed

        cluster, strategy = distributed.start()
    cfg = registry.preset(args.model, args.preset, args.set)
    run_dir = run_dir_for(args)
    if args.strategy == "multiworker":
        model = distributed.train(args.model, cfg, args.preset, run_dir, cluster, strategy, data_dir=args.data_dir,
                                  fresh=args.fresh)
    else:
        from zoo.train import train

        model = train(args.model, cfg, args.preset, run_dir, data_dir=args.data_dir, strategy=args.strategy,
                      fresh=args.fresh)
    if model is None:
        return 0  # a finished run, or a worker's share: nothing to evaluate or export
    if not args.no_eval:
        cmd_eval(args, cfg)
    if not args.no_export:
        cmd_export(args)
    return 0


def cmd_eval(args, cfg=None):
    cfg = cfg or registry.preset(args.model, args.preset, args.set)
    from zoo.evaluate import evaluate

    metrics = evaluate(args.model, cfg, run_dir_for(args), data_dir=args.data_dir)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_export(args):
    registry.preset(args.model, args.preset, args.set)  # validates the request
    from zoo.export import export

    out = export(args.model, run_dir_for(args), export_dir_for(args))
    print(f"exported {args.model} to {out}")
    return 0


def cmd_sample(argv: list) -> int:
    """`python -m zoo sample MODEL [--preset P | --export DIR] [options]`: `python -m zoo.runtime sample
    exports/MODEL [options]`, the same options with the same meanings (`--out` is the file or folder to
    write). Neither imports TensorFlow."""
    parser = argparse.ArgumentParser(prog="python -m zoo sample", add_help=False)
    parser.add_argument("model")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--export", default=None, help="the export folder (default: exports/MODEL)")
    parser.add_argument("-h", "--help", action="store_true")
    args, rest = parser.parse_known_args(argv)
    from zoo.runtime.__main__ import main as runtime_main

    if args.help:
        print("usage: python -m zoo sample MODEL [--preset P | --export DIR] [options]\n"
              "The export of MODEL (exports/MODEL, exports/MODEL-P, or DIR), sampled as python -m zoo.runtime "
              "sample samples it, with its options:\n")
        try:
            runtime_main(["sample", "--help"])
        except SystemExit as e:
            return e.code or 0
        return 0
    try:
        choose("model", args.model, list(registry.MODELS))  # sampling never imports the model (TensorFlow)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return runtime_main(["sample", str(args.export or shipped_export_dir(args.model, args.preset)), *rest])


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m zoo", description="Train, evaluate, export and sample zoo models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,train,eval,export,sample,triton}")
    sub.add_parser("list", help="list the models").set_defaults(func=cmd_list)

    def with_model(name, func, help):
        p = sub.add_parser(name, help=help)
        p.add_argument("model", help=f"one of: {', '.join(registry.MODELS)}")
        p.add_argument("--preset", default="default", help="a named preset of the model (default: default)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a preset value (repeatable)")
        p.set_defaults(func=func)
        return p

    p = with_model("train", cmd_train, "train, then evaluate and export")
    p.add_argument("--data-dir", help="TFDS data dir (default: $TFDS_DATA_DIR, else TFDS's own)")
    p.add_argument("--run-dir", help="checkpoints and logs (default: runs/MODEL/PRESET, or "
                                     "runs/MODEL/PRESET+KEY=VALUE,... with --set overrides)")
    p.add_argument("--out", help="export folder (default: exports/MODEL, or exports/MODEL-PRESET; "
                                 "with --set overrides RUN_DIR/export)")
    p.add_argument("--fresh", action="store_true",
                   help="train again from scratch; an earlier run in the folder is kept beside it")
    p.add_argument("--strategy", default="default", help="default | mirrored (all local GPUs) | multiworker (TF_CONFIG)")
    p.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")
    p.add_argument("--no-export", action="store_true", help="skip the export")
    p = with_model("eval", cmd_eval, "measure a trained model on the test split")
    p.add_argument("--data-dir")
    p.add_argument("--run-dir")
    p = with_model("export", cmd_export, "export a trained model (Keras, SavedModel, ONNX)")
    p.add_argument("--run-dir")
    p.add_argument("--out")
    # Parsed by cmd_sample and zoo.triton themselves (main() hands them the arguments): listed here for --help.
    sub.add_parser("sample", help="sample from an export with ONNX Runtime: python -m zoo.runtime sample's options "
                                  "(python -m zoo sample MODEL --help)")
    sub.add_parser("triton", help="write a Triton Inference Server model repository from the exports "
                                  "(python -m zoo triton --help)")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["triton"]:
        from zoo import triton

        return triton.main(argv[1:])
    if argv[:1] == ["sample"]:
        return cmd_sample(argv[1:])
    args = build_parser().parse_args(argv)
    # TensorFlow's C++ logging after start-up: errors only; with several workers not those either (a lost
    # worker is said in one line, zoo.distributed.first_line)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if getattr(args, "strategy", None) == "multiworker" else "2")
    try:
        if args.command in ("train", "eval", "export"):
            if args.command == "train":
                choose("strategy", args.strategy, STRATEGIES)
                if args.strategy == "multiworker":
                    from zoo.distributed import read_cluster

                    read_cluster(os.environ.get("TF_CONFIG"))
            registry.preset(args.model, args.preset, args.set, light=True)  # usage errors before TensorFlow
            start_tensorflow()
        return args.func(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (ZooError, ExportFileError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILURE
