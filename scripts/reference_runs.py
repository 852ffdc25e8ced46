"""The full training runs the fine-tuning notebooks are measured against: a model trained on
Fashion-MNIST with the whole `make train-<model>` budget, scored the way its notebook scores.

    make train-vae ARGS="--set dataset=fashion_mnist --no-export"
    python scripts/reference_runs.py vae "runs/vae/default+dataset=fashion_mnist" --out notebooks/references.jsonl

The run's `model.keras` is scored with the notebook's own measurement at the notebook's default
parameters (`vae`: negative ELBO on all test images, the IWAE bound on the first `IWAE_IMAGES`, FID of
10,000 samples; `pixelcnn`: exact NLL on the first `EVAL_IMAGES` test images), so that its figures
and the notebook's before / after / baseline compare like with like. `--out` appends one JSON line:
the notebook, the run's command, training time and epochs (from run.json), the figures, and the
machine; `python -m zoo.docs` puts them in the notebooks' README table.
"""

import argparse
import ast
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.config import UsageError  # noqa: E402


def notebook_defaults(name: str) -> dict:
    """The constants the `parameters` cell of notebooks/<name>.ipynb assigns."""
    notebook = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    [cell] = [c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    source = "".join(cell["source"])
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(source).body
            if isinstance(node, ast.Assign)}


def score_vae(model, cfg, params, data_dir):
    from zoo import registry
    from zoo.models import vae

    cfg = registry.preset("vae", "default", ["dataset=fashion_mnist", f"iwae_images={params['IWAE_IMAGES']}"])
    return vae.evaluate(model, cfg, data_dir)


def score_pixelcnn(model, cfg, params, data_dir):
    import tensorflow as tf

    from zoo import data as zdata
    from zoo.models import pixelcnn

    x_test, y_test = zdata.image_arrays("fashion_mnist", "test", data_dir, limit=params["EVAL_IMAGES"])
    x_test = pixelcnn.fixed_binarization(x_test, pixelcnn.TEST_SEED) / 255.0
    return float(np.mean(np.concatenate([model.nll(tf.constant(x_test[i:i + 500], tf.float32),
                                                   tf.constant(y_test[i:i + 500])).numpy()
                                         for i in range(0, len(x_test), 500)])))


SCORES = {"vae": score_vae, "pixelcnn": score_pixelcnn}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", choices=sorted(SCORES))
    parser.add_argument("run_dir", type=Path, help="a finished `zoo train` run on fashion_mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="append the record here (e.g. notebooks/references.jsonl)")
    args = parser.parse_args(argv)
    try:
        run = json.loads((args.run_dir / "run.json").read_text())
    except FileNotFoundError:
        raise UsageError(f"{args.run_dir} holds no finished run (run.json): train it first") from None
    config = run.get("config", {})
    if run.get("model") != args.notebook or config.get("dataset") != "fashion_mnist":
        raise UsageError(f"{args.run_dir} is a {run.get('model')} run on {config.get('dataset')}: the {args.notebook} "
                         "notebook's reference is a full run on fashion_mnist")

    from zoo.finetune import _plain
    from zoo.models import load_model

    model = load_model(args.run_dir / "model.keras")
    params = notebook_defaults(args.notebook)
    start = time.perf_counter()
    figures = SCORES[args.notebook](model, config, params, args.data_dir)
    record = {"notebook": args.notebook, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": run.get("command"), "train_seconds": run.get("train_seconds"),
              "epochs_completed": run.get("epochs_completed"), "scored_with": {k: params[k] for k in params
                                                                              if k in ("IWAE_IMAGES", "EVAL_IMAGES")},
              "score_seconds": round(time.perf_counter() - start, 1), "reference": figures,
              "machine": run.get("machine"), "versions": run.get("versions")}
    print(json.dumps(record["reference"], default=_plain))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(record, default=_plain) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as e:
        sys.exit(f"error: {e}")
