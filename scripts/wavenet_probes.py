"""Probes behind the figures in the wavenet model card that are not `make eval-wavenet` metrics.

    python scripts/wavenet_probes.py temperature EXPORT --clips 100 --temperatures 1,0.8,0.6 \
        --out scripts/records/wavenet_probes.jsonl

`temperature`: the judge's accuracy on the vocoder's re-synthesis of held-out clips (their own
log-mel frames) at several softmax temperatures of the vocoder, per digit and as a confusion
matrix, next to the judge on the real clips, and the mean absolute log-mel difference between each
re-synthesis and the frames it was given (the vocoder's drift). The same clips (10 per digit of the
test speaker, first ones; `--clips 0`: all) for every temperature; one seed. `--split validation`
re-synthesises the training voices' own validation recordings instead: what the vocoder loses on
voices it knows, apart from the new voice.
With one temperature (1) it compares vocoders: exports of short probe trainings, e.g.

    python -m zoo train wavenet --no-eval --set epochs=4 --set prior_units=8 --set prenet_units=8 \
        --set prior_batch_size=4 --set frame_channels=256      # a tiny prior: the vocoder's time alone
    python scripts/wavenet_probes.py temperature "runs/wavenet/default+epochs=4,.../export" --temperatures 1

`prior`: the prior's family, chosen by measurement. Trains a prior alone (no vocoder) of one family
for `--epochs` of the config's schedule (its steps per epoch, prior batch, learning rate and cosine
decay), then generates 20 clips per digit from the label alone at the config's mel temperature and
has the judge label them through Griffin-Lim (and through an export's WaveNet with `--vocoder`):

    python scripts/wavenet_probes.py prior --family conv --epochs 11 --vocoder exports/wavenet \
        --out scripts/records/wavenet_probes.jsonl

Families, all with the shipped prior's pre-net (dropout 0.5), digit embedding and head (a mixture
of diagonal Gaussians and a stop logit); 588,677, 638,085 and 747,525 weights in all:
  gru          a GRU of 256 units (the prior shipped before this probe chose the transformer)
  conv         causal convolutions: six gated layers of 128 channels, kernel 2, dilations 1..32
               (64 frames: the longest clip), residual
  transformer  the shipped `wavenet.MelPrior`: three pre-norm decoder blocks of width 128, 4 heads,
               causal self-attention, learned positions, an MLP of 512 (tanh GELU). Its records were
               made before it was shipped, with Keras's MultiHeadAttention in place of its own
               attention (the same weights and arithmetic)

`--out` appends one JSON line per run (the export's config and the rows, or the family's) to a record file.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def held_out(cfg, clips_per_digit, split="test"):
    """The first `clips_per_digit` clips of each digit of a split (0: all of them)."""
    from zoo.models import wavenet

    clips, digits = wavenet.split_clips(cfg)[split]
    pick = np.concatenate([np.flatnonzero(digits == d)[: clips_per_digit or None] for d in range(10)])
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
    clips, digits = held_out(cfg, args.clips // 10, args.split)
    judge = audio_classifier.load(cfg)
    real = judge.labels(clips)
    rows = []
    for t in [float(x) for x in args.temperatures.split(",")]:
        out, frames = resynthesize_batch(export, clips, digits, t, args.seed)
        heard = judge.labels(out)
        confusion = np.zeros((10, 10), int)  # [asked digit, heard digit]
        np.add.at(confusion, (digits, heard), 1)
        rows.append({"temperature": t, "split": args.split, "clips": len(clips),
                     "resynthesis_digit_accuracy": float((heard == digits).mean()),
                     "real_digit_accuracy": float((real == digits).mean()),
                     "per_digit": [float(confusion[d, d] / confusion[d].sum()) for d in range(10)],
                     "confusion": confusion.tolist(), "log_mel_drift": drift(out, frames)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def prior_families():
    """{family: a function (cfg) -> a prior layer with MelPrior's call(frames, digit, training) outputs}."""
    import keras
    import tensorflow as tf

    from zoo.models import wavenet

    class SequencePrior(wavenet.MelPrior):
        """MelPrior's pre-net, digit embedding and head around another sequence core than its
        transformer (whose layers it leaves unbuilt: no weights)."""

        def build(self, input_shape=None):
            self.prenet_1.build((None, self.mel_bins))
            self.prenet_2.build((None, self.prenet_units))
            self.digit_embedding.build((None,))
            self.head.build((None, self.units))
            self.built = True

        def call(self, frames, digit, training=False):
            return self._params(self.core(self._inputs(frames, digit, training), training))

    class GRUPrior(SequencePrior):
        def __init__(self, units=256, **kwargs):
            super().__init__(units=units, **kwargs)
            self.gru = keras.layers.GRU(units, return_sequences=True)

        def core(self, x, training):
            return self.gru(x, training=training)

    class ConvPrior(SequencePrior):
        def __init__(self, units=128, dilations=(1, 2, 4, 8, 16, 32), **kwargs):
            super().__init__(units=units, **kwargs)
            self.project = keras.layers.Dense(units)
            self.convs = [keras.layers.Conv1D(2 * units, 2, dilation_rate=d, padding="causal") for d in dilations]
            self.residuals = [keras.layers.Dense(units) for _ in dilations]

        def core(self, x, training):
            h = self.project(x)
            for conv, residual in zip(self.convs, self.residuals):
                f, g = tf.split(conv(h), 2, axis=-1)
                h = h + residual(tf.tanh(f) * tf.sigmoid(g))
            return h

    def common(cfg):
        return dict(prenet_units=cfg.prenet_units, mixtures=cfg.mixtures, dropout=cfg.prior_dropout)

    return {
        "gru": lambda cfg: GRUPrior(**common(cfg)),
        "conv": lambda cfg: ConvPrior(**common(cfg)),
        "transformer": lambda cfg: wavenet.MelPrior(cfg.prior_units, blocks=cfg.prior_blocks, heads=cfg.prior_heads,
                                                    attention_dropout=cfg.attention_dropout,
                                                    max_frames=cfg.max_frames, **common(cfg)),
    }


def prior_model(layer):
    """A Keras model training `layer` alone on WaveNet's prior objective."""
    import keras
    import tensorflow as tf

    from zoo.models import wavenet

    class PriorOnly(keras.Model):
        prior_params = wavenet.WaveNet.prior_params  # the same teacher forcing and loss as the shipped model
        prior_nll = wavenet.WaveNet.prior_nll

        def __init__(self, prior):
            super().__init__()
            self.prior = prior
            self.tracker = keras.metrics.Mean(name="prior_loss")

        @property
        def metrics(self):
            return [self.tracker]

        def train_step(self, data):
            with tf.GradientTape() as tape:
                loss, count = self.prior_nll(data["frames"], data["lengths"], data["digit"], training=True)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            self.tracker.update_state(loss, sample_weight=count)
            return {"prior_loss": self.tracker.result()}

        def test_step(self, data):
            loss, count = self.prior_nll(data["frames"], data["lengths"], data["digit"])
            self.tracker.update_state(loss, sample_weight=count)
            return {"prior_loss": self.tracker.result()}

    return PriorOnly(layer)


def prior_step_fn(model, cfg, family):
    """A step function for zoo.runtime.audio.sample_frames: the shipped prior's own cached step; for
    the others the whole frame history so far (kept here, padded to max_frames), read at the newest
    position."""
    import tensorflow as tf

    from zoo.runtime import audio

    if family == "transformer":
        step = tf.function(model.prior.step)
        return lambda frame, digit, state: [t.numpy() for t in step(frame, digit, state)], model.prior.state_size
    full = tf.function(lambda frames, digit: model.prior(frames, digit, training=False))
    history = {}

    def step(frame, digit, state):
        t = int(state[0, 0])
        if t == 0:
            history["frames"] = np.full((len(digit), cfg.max_frames, audio.MEL_BINS), audio.SILENT_FRAME, np.float32)
        history["frames"][:, t] = frame
        outputs = [o.numpy()[:, t] for o in full(tf.constant(history["frames"]), tf.constant(digit))]
        return (*outputs, state + 1)

    return step, 1


def prior(args):
    import time

    import keras
    import tensorflow as tf

    from zoo import registry
    from zoo.metrics import audio_classifier
    from zoo.models import wavenet
    from zoo.runtime import audio, load

    cfg = registry.preset("wavenet", "default", args.set)
    keras.utils.set_random_seed(cfg.seed)
    parts = wavenet.split_clips(cfg)

    def dataset(part, training):  # wavenet.load_data's prior stream
        ds = wavenet.prior_dataset(*parts[part], cfg, training)
        return ds.prefetch(tf.data.AUTOTUNE) if training else ds.batch(64)

    steps_per_epoch = cfg.steps_per_epoch or len(parts["train"][1]) // cfg.batch_size
    model = prior_model(prior_families()[args.family](cfg))
    model.prior.build()
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, args.epochs * steps_per_epoch, alpha=0.1)
    model.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=1.0))
    start = time.perf_counter()
    history = model.fit(dataset("train", True), epochs=args.epochs, steps_per_epoch=steps_per_epoch,
                        validation_data=dataset("validation", False), verbose=2)
    train_seconds = time.perf_counter() - start
    test = model.evaluate(dataset("test", False), verbose=0, return_dict=True)["prior_loss"]

    judge = audio_classifier.load(cfg)
    wanted = np.repeat(np.arange(10), args.per_digit)
    step, state_size = prior_step_fn(model, cfg, args.family)
    frames, lengths = audio.sample_frames(step, wanted.astype(np.int32), cfg.max_frames, state_size,
                                          cfg.mel_temperature, np.random.default_rng(args.seed))
    clips = audio.griffin_lim_clips(frames, lengths, args.seed)
    row = {"family": args.family, "epochs": args.epochs, "steps": args.epochs * steps_per_epoch,
           "prior_batch_size": cfg.prior_batch_size, "weights": int(model.prior.count_params()),
           "train_seconds": round(train_seconds, 1), "val_prior_loss": float(history.history["val_prior_loss"][-1]),
           "test_prior_loss": float(test), "mel_temperature": cfg.mel_temperature, "clips": len(wanted),
           "mean_seconds": float(lengths.mean() * audio.HOP / cfg.sample_rate),
           "generated_digit_accuracy_griffin_lim": float((judge.labels(clips) == wanted).mean()),
           "generated_mel_distance_same_digit_griffin_lim": float(np.mean(
               [wavenet.mel_distance([clips[i] for i in np.flatnonzero(wanted == d)]) for d in range(10)]))}
    row["config_overrides"] = args.set
    if args.vocoder:
        export = load(args.vocoder)
        _, condition_fn, vocoder_step = audio._onnx_stages(export, len(wanted))
        rng = np.random.default_rng(args.seed + 1)
        codes = audio.vocode(vocoder_step, np.asarray(condition_fn(frames, wanted.astype(np.int32))),
                             frames.shape[1] * audio.HOP, 1.0, rng)
        heard = audio.mu_law_decode(codes)
        heard = [heard[i, : lengths[i] * audio.HOP] for i in range(len(wanted))]
        row["vocoder"] = args.vocoder
        row["generated_digit_accuracy"] = float((judge.labels(heard) == wanted).mean())
    print(json.dumps(row), flush=True)
    return [row]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="probe", required=True)
    p = sub.add_parser("temperature")
    p.add_argument("export")
    p.add_argument("--clips", type=int, default=100, help="10%% per digit, the first ones (0: every clip)")
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="test: the held-out speaker; validation: unseen recordings of the training voices")
    p.add_argument("--temperatures", default="1,0.8,0.6")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the rows as JSON here")
    p = sub.add_parser("prior")
    p.add_argument("--family", choices=("gru", "conv", "transformer"), required=True)
    p.add_argument("--epochs", type=int, default=11, help="of the config's schedule (half the shipped run's 22)")
    p.add_argument("--vocoder", help="an export whose WaveNet also voices the generated frames")
    p.add_argument("--per-digit", type=int, default=20, help="generated clips per digit")
    p.add_argument("--set", action="append", default=[], help="a config override, as zoo train --set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = {"temperature": temperature, "prior": prior}[args.probe](args)
    if args.out:
        record = {"probe": args.probe, "argv": sys.argv[1:], "rows": rows}
        if args.probe == "temperature":
            manifest = json.loads((Path(args.export) / "manifest.json").read_text())
            record.update(export_config=manifest.get("config"),
                          export_command=manifest.get("training", {}).get("command"))
        else:
            from zoo import registry

            record["config"] = dataclasses.asdict(registry.preset("wavenet", "default", args.set))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
