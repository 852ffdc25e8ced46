"""wavenet: mu-law, log-mel frames, the speaker split, both stages (Keras and ONNX), the runtime."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import fake_audio_clips
from tests.test_runtime import run_runtime_cli
from zoo import registry, runtime
from zoo.config import UsageError
from zoo.models import wavenet
from zoo.runtime import audio as zaudio
from zoo.runtime.audio import (HOP, MEL_BINS, SILENCE, SILENT_FRAME, generate, log_mel, mu_law_decode, mu_law_encode,
                               read_wav)


def test_mu_law_round_trip():
    codes = np.arange(256)
    np.testing.assert_array_equal(mu_law_encode(mu_law_decode(codes)), codes)
    assert SILENCE == 128 and mu_law_encode(np.array([-1.0, 1.0])).tolist() == [0, 255]
    x = np.linspace(-1, 1, 1001)
    step = np.abs(mu_law_decode(mu_law_encode(x)) - x)
    assert step[500] < 1e-4 and step.max() < 0.025  # fine near silence (code 128 is 8.6e-5), coarse near full scale


def test_log_mel_frames_are_aligned_and_put_a_tone_in_its_band():
    assert log_mel(np.zeros(1000)).shape == (8, MEL_BINS)  # ceil(1000 / 128)
    np.testing.assert_array_equal(log_mel(np.zeros(300)), SILENT_FRAME)
    t = np.arange(4000) / 8000
    for hz in (300.0, 1000.0, 2500.0):
        frames = log_mel(0.5 * np.sin(2 * np.pi * hz * t))
        centres = zaudio.mel_filterbank().argmax(axis=0) * 8000 / zaudio.FFT  # each band's peak frequency
        assert abs(centres[frames[10].argmax()] - hz) < 60
    # A click at sample p reaches only the frames whose windows hold it: p // HOP and its neighbours.
    click = np.zeros(2048)
    click[1000] = 1.0
    loud = np.flatnonzero(log_mel(click).max(axis=1) > SILENT_FRAME)
    assert loud.tolist() == [1000 // HOP - 1, 1000 // HOP] or loud.tolist() == [1000 // HOP, 1000 // HOP + 1]


def test_griffin_lim_puts_back_the_frames_it_was_given():
    t = np.arange(6000) / 8000
    voice = sum(np.sin(2 * np.pi * k * (140 + 40 * t) * t) / k for k in range(1, 12)) * np.hanning(len(t)) * 0.3
    frames = log_mel(voice)
    np.testing.assert_allclose(zaudio.istft(zaudio.stft(voice), len(voice)), voice, atol=1e-12)
    audio = zaudio.griffin_lim(frames, seed=0)
    assert audio.dtype == np.float32 and audio.shape == (len(frames) * HOP,)
    np.testing.assert_array_equal(audio, zaudio.griffin_lim(frames, seed=0))
    error = np.abs(log_mel(audio) - frames)
    assert error.mean() < 0.05  # 2 dB (0.04 measured); random phases alone: 0.13, after 10 iterations 0.06
    assert np.abs(log_mel(zaudio.griffin_lim(frames, iterations=0)) - frames).mean() > 2.5 * error.mean()
    assert np.abs(zaudio.griffin_lim(np.full((5, MEL_BINS), SILENT_FRAME))).max() < 1e-3  # the log floor: -60 dB


def test_training_frames_are_the_runtime_log_mel():
    rng = np.random.default_rng(0)
    clips = [rng.uniform(-0.3, 0.3, n).astype(np.float32) for n in (700, 5000, 300)]
    frames, lengths = wavenet.prior_sequences(clips, max_frames=16)
    assert lengths.tolist() == [6, 16, 3]  # ceil(n / HOP), at most max_frames
    for clip, f, n in zip(clips, frames, lengths):
        # the frames of the clip's first max_frames * HOP samples, as the runtime computes them
        np.testing.assert_allclose(f[:n], log_mel(clip[: 16 * HOP])[:n], atol=1e-6)
        assert (f[n:] == SILENT_FRAME).all()
    codes, mel, weight = wavenet.vocoder_windows(clips, 512)
    assert codes.shape == (3, 513) and mel.shape == (3, 4, MEL_BINS) and weight.shape == (3, 512)
    np.testing.assert_allclose(mel[1], log_mel(clips[1])[:4], atol=1e-6)  # frames see past the window's end
    np.testing.assert_array_equal(codes[2, 1:301], mu_law_encode(clips[2]))
    assert codes[2, 0] == SILENCE and (codes[2, 301:] == SILENCE).all() and weight[2].sum() == 300


def test_training_windows_are_batched_by_length():
    import dataclasses

    import tensorflow as tf

    rng = np.random.default_rng(0)
    lengths = [300, 1024, 1500, 2500, 3000, 5000, 900, 2100]  # 1, 1, 2, 3, 3, 3 (capped), 1, 3 buckets of 1,024
    clips = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in lengths]
    cfg = dataclasses.replace(registry.preset("wavenet", "tiny"), clip_length=3072, batch_size=2)
    codes, mel, weight = wavenet.vocoder_windows(clips, cfg.clip_length)
    windows = tf.data.Dataset.from_tensor_slices({"codes": codes, "mel": mel, "weight": weight,
                                                  "digit": np.arange(len(clips), dtype=np.int32)})
    seen = []
    for batch in wavenet.length_batches(windows, cfg):
        n = batch["weight"].shape[1]
        assert batch["codes"].shape == (2, n + 1) and batch["mel"].shape == (2, n // HOP, MEL_BINS)
        for row, i in enumerate(batch["digit"].numpy()):
            seen.append(i)
            assert n == min(3072, -(-lengths[i] // 1024) * 1024)  # its own length, rounded up, not the window's
            np.testing.assert_array_equal(batch["codes"][row], codes[i, : n + 1])  # from its start (silence)
            np.testing.assert_array_equal(batch["mel"][row], mel[i, : n // HOP])
            assert batch["weight"][row].numpy().sum() == min(lengths[i], 3072)
    # Batches are whole: the third 1,024-sample window (clip 6) and the only 2,048 one (clip 2) wait for a partner.
    assert sorted(seen) == [0, 1, 3, 4, 5, 7]


def test_speaker_split(monkeypatch):
    from zoo import data

    monkeypatch.setattr(data, "audio_clips", fake_audio_clips)
    cfg = registry.preset("wavenet", "tiny")
    parts = wavenet.split_clips(cfg)
    assert {k: len(v[1]) for k, v in parts.items()} == {"train": 40, "validation": 20, "test": 30}
    assert all(np.abs(c).max() <= 1 for c in parts["test"][0])
    with pytest.raises(UsageError, match="test_speaker 'nobody' is not one of the speakers"):
        wavenet.split_clips(registry.preset("wavenet", "tiny", ["test_speaker=nobody"]))
    with pytest.raises(ValueError, match="is not <digit>_<speaker>_<index>.wav"):
        data.parse_spoken_digit_filename("noise.wav")


def test_no_import_cycle_between_the_judge_and_the_model():
    import ast
    from pathlib import Path

    source = Path(registry.__file__).parent / "metrics" / "audio_classifier.py"
    imported = {n.module for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.ImportFrom)}
    assert not [m for m in imported if m and m.startswith("zoo.models.wavenet")]


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    model = wavenet.build_model(registry.preset("wavenet", "tiny", ["stacks=2"]))
    for w in model.weights:  # random, larger weights: a fresh model's outputs hardly vary
        w.assign(np.random.default_rng(len(w.path)).normal(0, 0.5, w.shape).astype(np.float32))
    return model


def test_shapes(tiny_model):
    model = tiny_model
    codes = np.zeros((2, 300), np.int32)
    mel = np.zeros((2, 3, MEL_BINS), np.float32)
    assert model(codes, mel, np.array([1, 2], np.int32)).shape == (2, 300, 256)
    assert model.condition(mel, np.array([1, 2], np.int32)).shape == (2, 3, model.condition_channels)
    logits, means, scales, stop = model.prior_params(mel, np.array([1, 2], np.int32))
    assert (logits.shape, means.shape, scales.shape, stop.shape) == ((2, 3, 2), (2, 3, 2, MEL_BINS),
                                                                     (2, 3, 2, MEL_BINS), (2, 3))
    assert float(tf.reduce_min(scales)) >= wavenet.LOG_SCALE_MIN


def test_cached_step_equals_full_network_at_every_step(tiny_model):
    model = tiny_model
    length = 3 * model.receptive_field + 5  # past the point where the first samples leave the field
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (2, length)).astype(np.int32)
    mel = rng.uniform(-1, 1, (2, -(-length // HOP), MEL_BINS)).astype(np.float32)
    digit = np.array([3, 8], np.int32)
    want = model(codes, mel, digit).numpy()
    condition = model.condition(mel, digit).numpy()
    queues, got = model.initial_queues(2), []
    for t in range(length):
        logits, queues = model.step(tf.constant(codes[:, t]), tf.constant(condition[:, t // HOP]), queues)
        got.append(logits.numpy())
    assert np.abs(want).max() > 1  # not a trivially constant network
    np.testing.assert_allclose(np.stack(got, 1), want, atol=1e-4)


def test_prior_step_equals_teacher_forced_prior(tiny_model):
    model = tiny_model
    rng = np.random.default_rng(1)
    n = model.max_frames
    frames = rng.uniform(-1, 1, (2, n, MEL_BINS)).astype(np.float32)
    digit = np.array([0, 9], np.int32)
    want = [t.numpy() for t in model.prior_params(frames, digit)]
    assert np.abs(np.diff(want[1], axis=1)).max() > 1e-3  # the outputs move from frame to frame
    state = np.zeros((2, model.prior_state_size), np.float32)
    inputs = np.concatenate([np.full((2, 1, MEL_BINS), SILENT_FRAME, np.float32), frames[:, :-1]], axis=1)
    for t in range(n):
        *got, state = model.prior_step(inputs[:, t], digit, state)
        state = state.numpy()
        assert state[:, -1].tolist() == [t + 1, t + 1]  # the frame count, after the key/value cache
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.numpy(), w[:, t], atol=1e-5)
    # Causal: changing the last frame changes nothing before it (its output is for the frame after).
    later = frames.copy()
    later[:, -2] += 1.0
    moved = [t.numpy() for t in model.prior_params(later, digit)]
    for m, w in zip(moved, want):
        np.testing.assert_allclose(m[:, : n - 1], w[:, : n - 1], atol=1e-6)
    assert np.abs(moved[1][:, n - 1] - want[1][:, n - 1]).max() > 1e-4


def test_the_mel_and_the_digit_condition_the_vocoder(tiny_model):
    codes = np.full((2, 10), 100, np.int32)
    mel = np.zeros((2, 1, MEL_BINS), np.float32)
    out = tiny_model(codes, mel, np.array([1, 2], np.int32)).numpy()
    assert np.abs(out[0] - out[1]).max() > 1e-3
    other = tiny_model(codes, mel + np.array([[[1.0]], [[0.0]]], np.float32), np.array([1, 2], np.int32)).numpy()
    assert np.abs(other[0] - out[0]).max() > 1e-3


def test_frame_network_sees_three_frames_each_side_and_silence_past_the_ends(tiny_model):
    model = tiny_model  # the tiny preset keeps the default frame_layers=3
    assert model.frame_layers == 3
    rng = np.random.default_rng(2)
    mel = rng.uniform(-1, 1.5, (1, 12, MEL_BINS)).astype(np.float32)
    digit = np.array([4], np.int32)
    base = model.condition(mel, digit).numpy()
    changed = mel.copy()
    changed[0, 6] += 1.0  # frame 6 reaches the rows of frames 3..9 and no others
    moved = np.abs(model.condition(changed, digit).numpy() - base).max(axis=-1)[0]
    assert (moved[3:10] > 1e-4).all() and (moved[:3] == 0).all() and (moved[10:] == 0).all()
    # Past the end the network sees silent frames: a clip padded with them keeps its rows.
    padded = np.concatenate([mel, np.full((1, 5, MEL_BINS), SILENT_FRAME, np.float32)], axis=1)
    np.testing.assert_allclose(model.condition(padded, digit).numpy()[:, :12], base, atol=1e-6)


def test_mixture_nll_is_the_gaussian_mixture_density():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    logits, means, log_scales = (rng.normal(size=(3, 2)), rng.normal(size=(3, 2, 5)), rng.normal(0, 0.3, (3, 2, 5)))
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    scales = np.exp(log_scales)
    density = np.prod(np.exp(-0.5 * ((x[:, None] - means) / scales) ** 2) / (scales * math.sqrt(2 * math.pi)), -1)
    want = -np.log((weights * density).sum(-1))
    got = wavenet.mixture_nll(*(tf.constant(a, tf.float32) for a in (x, logits, means, log_scales))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_a_few_steps_reduce_both_stages_losses(monkeypatch):
    import keras

    from zoo import data

    monkeypatch.setattr(data, "audio_clips", fake_audio_clips)
    keras.utils.set_random_seed(0)
    cfg = registry.preset("wavenet", "tiny", ["learning_rate=0.01"])
    loaded = wavenet.load_data(cfg)
    model = wavenet.build_model(cfg, loaded)
    batch = next(iter(loaded.train))  # the same batch each step: its losses must fall
    before = model.test_step(batch)
    before = {k: float(before[k]) for k in ("vocoder_loss", "prior_loss")}
    for _ in range(30):
        model.train_step(batch)
    model.reset_metrics()
    after = model.test_step(batch)
    assert float(after["vocoder_loss"]) < before["vocoder_loss"] - 0.1
    assert float(after["prior_loss"]) < before["prior_loss"] - 0.1


def test_sampling_loops_stop_and_pad():
    def prior_step(frame, digit, state):  # ends clip 0 at frame 2, clip 1 never
        t = int(state[0, 0])
        batch = len(digit)
        means = np.full((batch, 1, MEL_BINS), 0.5 + t, np.float32)
        stop = np.array([5.0 if t == 2 else -5.0, -5.0])
        return np.zeros((batch, 1)), means, np.zeros_like(means), stop, state + 1

    frames, lengths = zaudio.sample_frames(prior_step, np.array([1, 2]), 4, 1, 0.0, np.random.default_rng(0))
    assert lengths.tolist() == [2, 4]
    np.testing.assert_array_equal(frames[0, :2, 0], [0.5, 1.5])
    assert (frames[0, 2:] == SILENT_FRAME).all() and frames[1, :, 0].tolist() == [0.5, 1.5, 2.5, 3.5]


def test_runtime_sampling_matches_the_keras_samplers_distribution():
    """The Gumbel-max draws of the runtime's vocoder loop and the inverse-CDF `sample_logits` draw
    from the same softmax; the prior's mixture draws have the mixture's moments."""
    from zoo.runtime.core import sample_logits

    rng = np.random.default_rng(0)
    logits = np.array([[2.0, 1.0, 0.0, -1.0, 0.5] + [-30.0] * 251])
    p = np.exp(logits[0] / 0.7) / np.exp(logits[0] / 0.7).sum()
    n = 40000
    sampler = zaudio.gumbel_sampler(rng, 1, 0.7, chunk=1000)
    gumbel = np.bincount([int(next(sampler)(logits)[0]) for _ in range(n)], minlength=256)
    inverse = np.bincount(sample_logits(np.repeat(logits, n, 0), 0.7, 0, rng), minlength=256)
    for counts in (gumbel, inverse):
        chi2 = float(((counts[:5] - n * p[:5]) ** 2 / (n * p[:5])).sum())
        assert chi2 < 20.5, chi2  # 4 degrees of freedom: p = 0.0004
        assert counts[5:].sum() == 0

    m_logits = np.log(np.array([[0.25, 0.75]]))
    means = np.array([[[-2.0] * MEL_BINS, [1.0] * MEL_BINS]])
    log_scales = np.log(np.array([[[0.5] * MEL_BINS, [0.2] * MEL_BINS]]))
    draws = np.concatenate([zaudio.sample_mixture(m_logits, means, log_scales, 0.5, rng) for _ in range(4000)])
    assert abs(draws.mean() - (0.25 * -2 + 0.75 * 1)) < 0.02
    first = draws[:, 0] < -0.5  # the component each draw came from
    assert abs(first.mean() - 0.25) < 0.02
    assert abs(draws[first].std() - 0.25) < 0.01 and abs(draws[~first].std() - 0.1) < 0.01  # scale x temperature


def test_wavenet_export_and_metrics(trained):
    t = trained("wavenet")
    folder = t["export"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert list(manifest["graphs"]) == ["step", "prior_step", "condition", "network"]
    n = len(manifest["runtime"]["dilations"])
    assert [i["name"] for i in manifest["graphs"]["step"]["inputs"]] == ["sample", "condition"] + [
        f"queue.{i}" for i in range(n)]
    assert [o["name"] for o in manifest["graphs"]["step"]["outputs"]] == ["logits"] + [f"next_queue.{i}" for i in range(n)]
    assert [o["name"] for o in manifest["graphs"]["prior_step"]["outputs"]] == [
        "mixture_logits", "means", "log_scales", "stop_logit", "next_state"]
    metrics = manifest["metrics"]
    assert metrics["test_speaker"] == "theo" and metrics["test_clips"] == 30
    cfg = t["cfg"]
    assert metrics["generated_clips"] == 10 * cfg.generate_per_digit
    assert metrics["resynthesis_clips"] == cfg.resynthesis_clips
    assert {f"samples/digit_{d}.wav" for d in range(10)} <= set(manifest["files"])


def test_metrics_are_what_the_code_computes(trained, monkeypatch):
    from zoo import data
    from zoo.metrics import audio_classifier

    t = trained("wavenet")
    model, cfg, metrics = t["model"], t["cfg"], t["metrics"]
    monkeypatch.setattr(data, "audio_clips", fake_audio_clips)
    clips, digits = wavenet.split_clips(cfg)["test"]
    assert metrics["test_nll_nats_per_sample"] == pytest.approx(wavenet.teacher_forced_nll(model, clips, digits), rel=1e-6)
    wanted = np.repeat(np.arange(10), cfg.generate_per_digit)
    generated, frames, lengths = wavenet.generate(model, wanted, cfg.max_frames * HOP / cfg.sample_rate,
                                                  mel_temperature=cfg.mel_temperature, seed=cfg.seed)
    judge = audio_classifier.load(cfg, train_if_missing=False)
    assert metrics["generated_digit_accuracy"] == float((judge.labels(generated) == wanted).mean())
    griffin_lim = [zaudio.griffin_lim(frames[i, : lengths[i]], seed=cfg.seed + i) for i in range(len(wanted))]
    assert metrics["generated_digit_accuracy_griffin_lim"] == float((judge.labels(griffin_lim) == wanted).mean())
    same = [wavenet.mel_distance([generated[i] for i in np.flatnonzero(wanted == d)]) for d in range(10)]
    assert metrics["generated_mel_distance_same_digit"] == pytest.approx(np.mean(same))


def test_teacher_forced_nll_counts_every_real_sample(trained):
    model = trained("wavenet")["model"]
    rng = np.random.default_rng(3)
    clips = [rng.uniform(-0.5, 0.5, 300).astype(np.float32), rng.uniform(-0.5, 0.5, 20).astype(np.float32)]
    digits = np.array([1, 2], np.int32)
    nll = []
    for clip, digit in zip(clips, digits):
        codes = wavenet.to_codes(clip)
        mel = log_mel(clip)[None]
        logits = model(codes[None, :-1], mel, np.array([digit], np.int32)).numpy()[0]
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll.append(-log_p[np.arange(len(codes) - 1), codes[1:]])
    want = np.concatenate(nll).mean()
    assert wavenet.teacher_forced_nll(model, clips, digits) == pytest.approx(want, rel=1e-5)


def test_onnx_graphs_equal_keras(trained):
    from zoo.runtime.audio import StepRunner

    t = trained("wavenet")
    export, model = runtime.load(t["export"]), t["model"]
    info = export.runtime
    length = 2 * info["receptive_field"] + 3
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (2, length)).astype(np.int32)
    mel = rng.uniform(-1, 1, (2, -(-length // HOP), MEL_BINS)).astype(np.float32)
    digit = np.array([4, 9], np.int32)
    want = export.run("network", {"samples": codes, "mel": mel, "digit": digit})["logits"]
    np.testing.assert_allclose(want, model(codes, mel, digit).numpy(), atol=1e-4)
    condition = export.run("condition", {"mel": mel, "digit": digit})["condition"]
    step = StepRunner(export, 2)
    got = np.stack([step(codes[:, t], condition[:, t // HOP]).copy() for t in range(length)], 1)
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("temperature, mel_temperature", [(0.0, 0.0), (1.0, 0.6)])
def test_runtime_two_stage_sampler_equals_keras(trained, temperature, mel_temperature):
    """The same seed drives the same numpy loops: ONNX graphs and Keras networks give the same clips."""
    t = trained("wavenet")
    export, model = runtime.load(t["export"]), t["model"]
    digits = np.array([0, 3, 7], np.int32)
    seconds = model.max_frames * HOP / model.sample_rate
    want, want_frames, want_lengths = wavenet.generate(model, digits, seconds, temperature, mel_temperature, seed=5)
    from zoo.runtime.audio import _onnx_stages, generate_clips

    got, frames, lengths = generate_clips(*_onnx_stages(export, 3), digits, model.max_frames, model.prior_state_size,
                                          temperature, mel_temperature, seed=5)
    np.testing.assert_array_equal(lengths, want_lengths)
    np.testing.assert_allclose(frames, want_frames, atol=1e-4)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert [len(c) for c in generate(export, digits, seconds, temperature, mel_temperature, seed=5)] == [len(c) for c in want]


def test_generation_is_seeded_and_checks_its_request(trained):
    export = runtime.load(trained("wavenet")["export"])
    a = generate(export, "1,5", seconds=0.03, seed=3)
    assert len(a) == 2 and all(len(c) % HOP == 0 and len(c) <= 2 * HOP for c in a)
    assert all(np.abs(c).max() <= 1 for c in a)
    for x, y in zip(a, generate(export, [1, 5], seconds=0.03, seed=3)):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match=r"^digits must be in 0..9, got \[11\]$"):
        generate(export, "11")
    with pytest.raises(ValueError, match="^seconds must be a positive number"):
        generate(export, "1", seconds=0)
    with pytest.raises(ValueError, match=r"^seconds must be at most 0.064 \(the prior's 4 frames\), got 5"):
        generate(export, "1", seconds=5)
    with pytest.raises(ValueError, match="^mel_temperature must be a finite number >= 0, got -1"):
        generate(export, "1", 0.03, mel_temperature=-1)
    with pytest.raises(ValueError, match="^temperature must be a finite number >= 0, got nan"):
        generate(export, "1", 0.03, temperature=float("nan"))


def test_griffin_lim_vocoder_uses_the_same_prior_frames(trained, monkeypatch):
    export = runtime.load(trained("wavenet")["export"])
    calls = []
    monkeypatch.setattr(zaudio, "griffin_lim", lambda frames, seed: calls.append(frames.copy()) or np.zeros(len(frames) * HOP))
    clips = generate(export, "3,8", seconds=0.06, mel_temperature=0.5, seed=4, vocoder="griffin-lim")
    info = export.runtime
    rng = np.random.default_rng(4)
    prior_step, _, _ = zaudio._onnx_stages(export, 2, vocoder=False)
    frames, lengths = zaudio.sample_frames(prior_step, np.array([3, 8], np.int32), 4, info["prior_state"], 0.5, rng)
    assert [len(c) for c in clips] == [n * HOP for n in lengths]
    for got, want, n in zip(calls, frames, lengths):
        np.testing.assert_array_equal(got, want[:n])
    with pytest.raises(ValueError, match="^vocoder must be one of wavenet, griffin-lim, got 'world'$"):
        generate(export, "1", 0.03, vocoder="world")


def test_audio_runtime_without_tensorflow(trained, tmp_path):
    export = trained("wavenet")["export"]
    lines = run_runtime_cli("sample", export, "--digits", "2,7", "--seconds", "0.05", "--mel-temperature", "0.3",
                            "--out", tmp_path)
    assert lines[-1] == "LOADED []"
    audio, rate = read_wav(tmp_path / "digit_7.wav")
    assert rate == 8000 and 0 < audio.shape[0] <= 4 * HOP and audio.shape[0] % HOP == 0


def test_resynthesis_reads_a_recording(trained):
    export = runtime.load(trained("wavenet")["export"])
    clip = np.sin(np.arange(300) / 5).astype(np.float32) * 0.3
    out = zaudio.resynthesize(export, clip, 4, seed=1)
    assert out.shape == (300,) and np.abs(out).max() <= 1
    with pytest.raises(ValueError, match="digit must be in 0..9"):
        zaudio.resynthesize(export, clip, 10)


def test_audio_judge_holds_out_the_test_speaker(trained):
    import os
    from pathlib import Path

    trained("wavenet")  # its evaluation trained the judge on the fake clips
    info = json.loads((Path(os.environ["ZOO_CLASSIFIERS"]) / "spoken_digit" / "info.json").read_text())
    assert info["test_speaker"] == "theo" and info["test_examples"] == 30 and info["train_examples"] == 60


def test_real_spoken_digit_speaker_split(real_tfds):
    parts = wavenet.split_clips(registry.preset("wavenet", "default"), real_tfds)
    # 6 speakers x 10 digits x 50 recordings; theo's 500 are the test set; 5 of 50 validate.
    assert {k: len(v[1]) for k, v in parts.items()} == {"train": 2250, "validation": 250, "test": 500}
    assert np.bincount(parts["test"][1]).tolist() == [50] * 10
    frames, lengths = wavenet.prior_sequences(parts["test"][0][:50], 64)
    assert frames.min() >= SILENT_FRAME and 5 < lengths.mean() < 64


def test_perturbed_copies_change_speed_and_gain():
    t = np.arange(8000) / 8000
    clip = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    out, digits = wavenet.perturb([clip, clip[:4000]], np.array([3, 4]), copies=3, seed=0)
    assert len(out) == 6 and digits.tolist() == [3, 4] * 3
    for c, n in zip(out, [8000, 4000] * 3):
        rate = n / len(c)
        assert 0.85 - 1e-3 < rate < 1.15 + 1e-3  # played 0.85-1.15 times as fast
        pitch = np.count_nonzero(np.diff(np.sign(c)) > 0) / (len(c) / 8000)
        assert abs(pitch - 200 * rate) < 3  # the pitch moved with the speed
        assert 0.5 * 0.5 - 1e-3 < np.abs(c).max() < 1.5 * 0.5 + 1e-3  # gain 0.5-1.5
    assert len({len(c) for c in out[::2]}) == 3  # each copy its own speed
