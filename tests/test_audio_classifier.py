"""The spoken-digit judge's front end: silence trimming and per-utterance normalisation."""

import numpy as np

from zoo.metrics.audio_classifier import UtteranceNorm, fixed_audio, trim_silence


def test_trim_silence_keeps_the_voiced_part():
    rng = np.random.default_rng(0)
    tone = 0.5 * np.sin(np.arange(2048) * 0.3)
    clip = np.concatenate([np.zeros(1024), tone, np.zeros(1536)]) + 1e-5 * rng.standard_normal(4608)
    trimmed = trim_silence(clip)
    assert len(trimmed) == 2048  # frames 8..23 of 128 samples: the tone, none of the near-silence
    np.testing.assert_allclose(trimmed, clip[1024:3072].astype(np.float32))
    assert len(trim_silence(clip[:100])) == 100  # shorter than two frames: left alone


def test_fixed_audio_trims_then_pads_or_cuts():
    clip = np.concatenate([np.zeros(512), np.ones(256) * 0.5, np.zeros(512)])
    out = fixed_audio([clip, np.ones(1000) * 0.1], 300)
    assert out.shape == (2, 300)
    np.testing.assert_array_equal(out[0], np.r_[np.full(256, 0.5), np.zeros(44)].astype(np.float32))
    np.testing.assert_array_equal(out[1], np.full(300, 0.1, np.float32))


def test_utterance_norm_removes_each_clips_spectral_offset_and_scale():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 30, 40)).astype(np.float32)
    offset = rng.standard_normal((2, 1, 40)).astype(np.float32) * 10  # a microphone's tilt, per bin
    norm = UtteranceNorm()
    y = np.asarray(norm(x))
    np.testing.assert_allclose(np.asarray(norm(3.0 * x + offset)), y, rtol=2e-3, atol=2e-3)  # up to the 1e-3 guard
    np.testing.assert_allclose(y.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(1, 2)), 1, atol=2e-3)
