"""Probes behind the fine-tuning notebooks' defaults: the levers, measured on a budget.

    python scripts/finetune_probes.py gan --init shipped --steps 4000 --eval-every 1000 \
        --lr 2e-4 --freeze none --ema 0.999 --out scripts/records/finetune_probes.jsonl

`gan`: the conditional DCGAN moved from MNIST to Fashion-MNIST (as `notebooks/gan.ipynb` does) or,
with `--init scratch`, the same architecture trained from fresh weights on the same steps: the
notebook's baseline. Every `--eval-every` steps it generates `--samples` images (an equal number
per label, seed 0) and the Fashion-MNIST judge gives FID (on its features, against the 10,000 test
images) and class accuracy, for the live generator and, with `--ema`, for an exponential moving
average of the generator's weights (Keras's `use_ema`). The figures at 2,000 samples are for
choosing between levers: FID falls with more samples, so the notebook publishes 10,000 (and
`--final-samples 10000` judges the last step so).

Levers: `--lr` (both networks; `--d-lr` apart), `--freeze` (`first_conv`: the discriminator's first
convolution, FreezeD), `--reset-discriminator` (the shipped generator against a discriminator
from fresh weights), `--ema` (the momentum of the generator's weight average; 0: none).

`vae`: the VAE moved from MNIST to Fashion-MNIST (as `notebooks/vae.ipynb` does) or trained from
scratch with `--init scratch`; every `--eval-every` steps the test negative ELBO on all 10,000 images,
and with `--fid` the FID of 10,000 samples after the last step. Levers: `--lr`, `--freeze`
(`first_conv`: the encoder's first convolution). 429 steps are one pass over the training images:

    python scripts/finetune_probes.py vae --init shipped --steps 2145 --eval-every 429 --lr 1e-3 \
        --fid --out scripts/records/finetune_probes.jsonl

`--out` appends one JSON line per probe: its arguments, the rows (step, seconds of training so far,
figures) and the machine's CPU count.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def gan_probe(args):
    import keras

    from zoo import registry
    from zoo.finetune import load_shipped
    from zoo.models import gan

    keras.utils.set_random_seed(args.seed)
    cfg = registry.preset("gan", "default", ["dataset=fashion_mnist", f"seed={args.seed}"])
    data = gan.load_data(cfg, args.data_dir)
    if args.init == "shipped":
        model, _ = load_shipped("gan", args.exports)
    else:
        model = gan.build_model(cfg)
    if args.reset_discriminator:  # the shipped generator against a discriminator from fresh weights
        model.discriminator.set_weights(gan.build_model(cfg).discriminator.get_weights())
    if args.freeze == "first_conv":
        next(l for l in model.discriminator.layers if isinstance(l, keras.layers.Conv2D)).trainable = False
    g_opt = keras.optimizers.Adam(args.lr, beta_1=0.5, use_ema=args.ema > 0, ema_momentum=args.ema or 0.99)
    d_opt = keras.optimizers.Adam(args.d_lr or args.lr, beta_1=0.5)
    model.compile(g_optimizer=g_opt, d_optimizer=d_opt)

    def judge(tag, samples):
        return {f"{tag}_{k}": v for k, v in gan.evaluate(model, cfg, args.data_dir, samples=samples).items()
                if k in ("fid", "class_accuracy", "samples")}

    rows, seconds, done, epoch = [], 0.0, 0, 0
    while done < args.steps:
        n = min(args.eval_every, args.steps - done)
        start = time.perf_counter()
        logs = model.fit(data.train, initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=n, verbose=0).history
        seconds += time.perf_counter() - start
        done, epoch = done + n, epoch + 1
        row = {"step": done, "train_seconds": round(seconds, 1), **{k: float(v[-1]) for k, v in logs.items()}}
        samples = args.final_samples if done >= args.steps and args.final_samples else args.samples
        row.update(judge("live", samples))
        if args.ema:  # swap the average in, judge it, swap the live weights back
            live = [v.numpy() for v in model.generator.trainable_variables]
            g_opt.finalize_variable_values(model.generator.trainable_variables)
            row.update(judge("ema", samples))
            for v, w in zip(model.generator.trainable_variables, live):
                v.assign(w)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def vae_probe(args):
    """The VAE moved from MNIST to Fashion-MNIST (as `notebooks/vae.ipynb` does) or, with `--init
    scratch`, trained from fresh weights: the test negative ELBO (all 10,000 images, binarised as
    `vae.evaluate` does) every `--eval-every` steps; FID of 10,000 samples at the end with `--fid`."""
    import keras
    import tensorflow as tf

    from zoo import data as zdata
    from zoo import registry
    from zoo.finetune import load_shipped
    from zoo.models import vae

    keras.utils.set_random_seed(args.seed)
    cfg = registry.preset("vae", "default", ["dataset=fashion_mnist", f"seed={args.seed}"])
    data = vae.load_data(cfg, args.data_dir)
    model = load_shipped("vae", args.exports)[0] if args.init == "shipped" else vae.build_model(cfg)
    if args.freeze == "first_conv":
        next(l for l in model.encoder.layers if isinstance(l, keras.layers.Conv2D)).trainable = False
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    x_test, _ = zdata.image_arrays(cfg.dataset, "test", args.data_dir)

    def negative_elbo():
        total = 0.0
        for i in range(0, len(x_test), 100):  # the batches and binarisation seeds of vae.evaluate
            recon, kl = model.elbo_terms(vae.binarize(x_test[i:i + 100], seed=(cfg.seed, i)), None, training=False)
            total += float(tf.reduce_sum(recon + kl))
        return total / len(x_test)

    rows, seconds, done, epoch = [], 0.0, 0, 0
    while done < args.steps:
        n = min(args.eval_every, args.steps - done)
        start = time.perf_counter()
        logs = model.fit(data.train, initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=n, verbose=0).history
        seconds += time.perf_counter() - start
        done, epoch = done + n, epoch + 1
        row = {"step": done, "train_seconds": round(seconds, 1), **{k: float(v[-1]) for k, v in logs.items()},
               "test_negative_elbo": negative_elbo()}
        if args.fid and done >= args.steps:
            row.update(vae.sample_quality(model, cfg, args.data_dir))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", choices=["gan", "vae"])
    parser.add_argument("--init", choices=["shipped", "scratch"], default="shipped")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--final-samples", type=int, default=0, help="the last evaluation's samples (0: --samples)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--d-lr", type=float, default=0.0, help="0: --lr")
    parser.add_argument("--freeze", choices=["none", "first_conv"], default="none",
                        help="first_conv: the gan's discriminator's, the vae's encoder's")
    parser.add_argument("--fid", action="store_true", help="vae: FID of 10,000 samples after the last step")
    parser.add_argument("--ema", type=float, default=0.0)
    parser.add_argument("--reset-discriminator", action="store_true",
                        help="with --init shipped: the discriminator from fresh weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exports", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = (gan_probe if args.probe == "gan" else vae_probe)(args)
    record = {"probe": args.probe, "argv": sys.argv[1:] if argv is None else list(argv),
              "args": {k: v for k, v in vars(args).items() if k not in ("out", "exports", "data_dir")},
              "rows": rows, "cpus": os.cpu_count()}
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
