"""The wavenet's generation on the Keras model (the runtime's numpy loops around its stages) and its
evaluation on the held-out speaker."""

import math

import numpy as np
import tensorflow as tf

from zoo.runtime import audio as zaudio
from zoo.runtime.audio import HOP, MEL_BINS, MU, SILENT_FRAME, log_mel, mu_law_decode
from zoo.models.wavenet.data import prior_sequences, split_clips, to_codes, vocoder_windows
from zoo.models.wavenet.network import NUM_CLASSES, SAMPLE_DEFAULTS


def keras_stages(model):
    """(prior_step, condition_fn, vocoder_step) on the Keras model, for zoo.runtime.audio's loops:
    the same numpy sampling code runs on the Keras networks here and on the ONNX graphs there."""
    prior_step = tf.function(model.prior_step)
    condition = tf.function(model.condition)
    step = tf.function(model.step)
    queues = {}

    def prior_fn(frame, digit, state):
        return [t.numpy() for t in prior_step(tf.constant(frame), tf.constant(digit), tf.constant(state))]

    def condition_fn(frames, digits):
        queues["q"] = None  # a new clip: the vocoder starts again from zero queues
        return condition(tf.constant(frames), tf.constant(np.asarray(digits, np.int32))).numpy()

    def vocoder_step(current, row):
        if queues.get("q") is None:
            queues["q"] = model.initial_queues(len(current))
        logits, queues["q"] = step(tf.constant(current), tf.constant(row), queues["q"])
        return logits.numpy()

    return prior_fn, condition_fn, vocoder_step


def generate(model, digits, seconds=1.0, temperature=1.0, mel_temperature=SAMPLE_DEFAULTS["mel_temperature"], seed=0):
    """(float clips, frames, lengths) for `digits`, sampled from the Keras model by the runtime's loops."""
    max_frames = min(model.max_frames, int(math.ceil(seconds * model.sample_rate / HOP)))
    return zaudio.generate_clips(*keras_stages(model), np.asarray(digits, np.int32), max_frames, model.prior_state_size,
                                 temperature, mel_temperature, seed)


def resynthesize(model, clips: list, digits, max_frames: int, seed=0, batch_size=100) -> list:
    """The vocoder alone on real recordings' own log-mel frames (each cut to max_frames)."""
    _, condition_fn, vocoder_step = keras_stages(model)
    rng = np.random.default_rng(seed)
    clips = [c[: max_frames * HOP] for c in clips]
    order = np.argsort([len(c) for c in clips])
    out = [None] * len(clips)
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        frames, _ = prior_sequences([clips[j] for j in idx], max_frames)
        n = max(len(clips[j]) for j in idx)
        frames = frames[:, : -(-n // HOP)]
        codes = zaudio.vocode(vocoder_step, condition_fn(frames, digits[idx]), n, 1.0, rng)
        for row, j in enumerate(idx):
            out[j] = mu_law_decode(codes[row, : len(clips[j])])
    return out


def teacher_forced_nll(model, clips: list, digits: np.ndarray, batch_size=16) -> float:
    """The vocoder's mean NLL in nats per sample over every sample of every clip (each scored from
    its start, conditioned on its own log-mel frames)."""
    order = np.argsort([len(c) for c in clips])  # similar lengths together: little padding
    total, count = 0.0, 0.0
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        length = -(-max(len(clips[j]) + 1 for j in idx) // 1024) * 1024  # few distinct shapes to trace
        codes, mel, weight = vocoder_windows([clips[j] for j in idx], length)
        loss, n = model.vocoder_nll(tf.constant(codes), tf.constant(mel), tf.constant(digits[idx]), tf.constant(weight))
        total += float(loss) * float(n)
        count += float(n)
    return total / count


def mel_distance(clips: list, frames: int = 64) -> float:
    """Mean pairwise distance between clips' log-mels (RMS over `frames` frames x 80 bands, each clip
    trimmed of silence, then cut or padded with silent frames)."""
    from zoo.metrics.audio_classifier import trim_silence

    mels = np.full((len(clips), frames, MEL_BINS), SILENT_FRAME, np.float32)
    for i, c in enumerate(clips):
        m = log_mel(trim_silence(c))[:frames]
        mels[i, : len(m)] = m
    flat = mels.reshape(len(clips), -1)
    d = [np.sqrt(np.mean((flat[i] - flat[j]) ** 2)) for i in range(len(clips)) for j in range(i + 1, len(clips))]
    return float(np.mean(d))


EVAL_NOTE = (
    "Test set: every recording of the held-out speaker (`test_speaker` in the config), never seen "
    "in training or validation. Vocoder NLL: teacher-forced on the real log-mel frames, every sample "
    "of every test clip from its start, in bits per sample (nats / ln 2); "
    "`test_unigram_bits_per_sample` is the entropy of the test codes' own histogram, the score of a "
    "model that ignores all context. `test_prior_loss`: the prior's teacher-forced nats per mel "
    "value plus its stop cross-entropy. Digit accuracy: `generate_per_digit` clips per digit "
    "generated from the label alone (prior at `mel_temperature`, vocoder at temperature 1, the "
    "runtime's sampling loops on the Keras networks), labelled by the zoo's spoken-digit classifier "
    "(zoo.metrics.audio_classifier), whose accuracy on the held-out speaker's real recordings is "
    "`classifier_test_accuracy`; `resynthesis_digit_accuracy`: the same classifier on the vocoder's "
    "re-synthesis of those real recordings from their own log-mel frames (the vocoder's ceiling). "
    "Diversity: the mean pairwise log-mel distance (RMS, silence-trimmed, first 64 frames) between "
    "generated clips of one digit, and between the held-out speaker's real clips of one digit "
    "(as many per digit), averaged over the digits. `*_griffin_lim`: the same frames turned into audio by "
    "Griffin-Lim (zoo.runtime.audio.griffin_lim, no network) instead of the WaveNet: what the frames "
    "carry, apart from what the vocoder makes of them. The design, the probes that chose it and what "
    "limits these figures are on the model's page of the zoo's documentation (docs/models/wavenet.md)."
)


def evaluate(model, cfg, data_dir=None) -> dict:
    from zoo.metrics import audio_classifier

    parts = split_clips(cfg, data_dir)
    clips, digits = parts["test"]
    codes = [to_codes(c) for c in clips]
    nll = teacher_forced_nll(model, clips, digits)
    histogram = np.bincount(np.concatenate([c[1:] for c in codes]), minlength=MU + 1) / sum(len(c) - 1 for c in codes)
    unigram = -float(np.sum(histogram[histogram > 0] * np.log2(histogram[histogram > 0])))
    frames, lengths = prior_sequences(clips, cfg.max_frames, cfg.sample_rate)
    prior_loss, _ = model.prior_nll(tf.constant(frames), tf.constant(lengths), tf.constant(digits))

    judge = audio_classifier.load(cfg, data_dir)
    wanted = np.repeat(np.arange(NUM_CLASSES), cfg.generate_per_digit)
    generated, gen_frames, gen_lengths = generate(model, wanted, cfg.max_frames * HOP / cfg.sample_rate,
                                                  mel_temperature=cfg.mel_temperature, seed=cfg.seed)
    n = cfg.resynthesis_clips or len(clips)
    pick = np.random.default_rng(cfg.seed).permutation(len(clips))[:n]
    resynthesized = resynthesize(model, [clips[i] for i in pick], digits[pick], cfg.max_frames, seed=cfg.seed)
    # The same frames through Griffin-Lim, a vocoder without a network: what the frames carry.
    gen_griffin_lim = zaudio.griffin_lim_clips(gen_frames, gen_lengths, cfg.seed)
    real_frames, real_lengths = prior_sequences([clips[i] for i in pick], cfg.max_frames, cfg.sample_rate)
    resynth_griffin_lim = [zaudio.griffin_lim(f[:n_frames], seed=cfg.seed) for f, n_frames in zip(real_frames, real_lengths)]
    heard = [mu_law_decode(c[1:]) for c in codes]  # real audio as the vocoder's codes can carry it
    real_per_digit = [[heard[i] for i in np.flatnonzero(digits == d)[: cfg.generate_per_digit]] for d in range(NUM_CLASSES)]
    return {
        "test_nll_bits_per_sample": nll / math.log(2),
        "test_nll_nats_per_sample": nll,
        "test_unigram_bits_per_sample": unigram,
        "test_prior_loss": float(prior_loss),
        "test_speaker": cfg.test_speaker,
        "test_clips": len(clips),
        "test_samples": int(sum(len(c) - 1 for c in codes)),
        "generated_digit_accuracy": float((judge.labels(generated) == wanted).mean()),
        "generated_clips": len(wanted),
        "generated_mean_seconds": float(gen_lengths.mean() * HOP / cfg.sample_rate),
        "resynthesis_digit_accuracy": float((judge.labels(resynthesized) == digits[pick]).mean()),
        "resynthesis_clips": int(n),
        "generated_digit_accuracy_griffin_lim": float((judge.labels(gen_griffin_lim) == wanted).mean()),
        "resynthesis_digit_accuracy_griffin_lim": float((judge.labels(resynth_griffin_lim) == digits[pick]).mean()),
        "classifier_test_accuracy": judge.info["test_accuracy"],
        "generated_mel_distance_same_digit": float(np.mean(
            [mel_distance([generated[i] for i in np.flatnonzero(wanted == d)]) for d in range(NUM_CLASSES)])),
        "real_mel_distance_same_digit": float(np.mean([mel_distance(c) for c in real_per_digit if len(c) > 1])),
    }
