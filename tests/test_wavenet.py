"""wavenet: mu-law, the speaker split, cached step == full network (Keras and ONNX), audio runtime."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import fake_audio_clips
from tests.test_runtime import run_runtime_cli
from zoo import registry, runtime
from zoo.models import wavenet
from zoo.runtime.audio import SILENCE, generate, mu_law_decode, mu_law_encode, read_wav


def test_mu_law_round_trip():
    codes = np.arange(256)
    np.testing.assert_array_equal(mu_law_encode(mu_law_decode(codes)), codes)
    assert SILENCE == 128 and mu_law_encode(np.array([-1.0, 1.0])).tolist() == [0, 255]
    x = np.linspace(-1, 1, 1001)
    step = np.abs(mu_law_decode(mu_law_encode(x)) - x)
    assert step[500] < 1e-4 and step.max() < 0.025  # fine near silence (code 128 is 8.6e-5), coarse near full scale


def test_speaker_split(monkeypatch):
    from zoo import data

    monkeypatch.setattr(data, "audio_clips", fake_audio_clips)
    cfg = registry.preset("wavenet", "tiny")
    parts = wavenet.split_clips(cfg)
    assert {k: len(v[1]) for k, v in parts.items()} == {"train": 40, "validation": 20, "test": 30}
    assert all(codes[0] == SILENCE for codes in parts["test"][0])  # each clip starts with a silence input
    with pytest.raises(ValueError, match="test_speaker 'nobody' is not one of the speakers"):
        wavenet.split_clips(registry.preset("wavenet", "tiny", ["test_speaker=nobody"]))
    with pytest.raises(ValueError, match="is not <digit>_<speaker>_<index>.wav"):
        wavenet.parse_filename("noise.wav")


def test_fixed_length_pads_with_silence_and_weights_real_targets():
    batch, weight = wavenet.fixed_length([np.array([128, 5, 6]), np.arange(10)], 4)
    assert batch.tolist() == [[128, 5, 6, 128, 128], [0, 1, 2, 3, 4]]
    assert weight.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    model = wavenet.build_model(registry.preset("wavenet", "tiny", ["stacks=2"]))
    for w in model.weights:  # random, larger weights: a fresh model's outputs hardly vary
        w.assign(np.random.default_rng(len(w.path)).normal(0, 0.5, w.shape).astype(np.float32))
    return model


def test_cached_step_equals_full_network_at_every_step(tiny_model):
    model = tiny_model
    length = 3 * model.receptive_field + 5  # past the point where the first samples leave the field
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (2, length)).astype(np.int32)
    digit = np.array([3, 8], np.int32)
    want = model(codes, digit).numpy()
    queues, got = model.initial_queues(2), []
    for t in range(length):
        logits, queues = model.step(tf.constant(codes[:, t]), tf.constant(digit), queues)
        got.append(logits.numpy())
    assert np.abs(want).max() > 1  # not a trivially constant network
    np.testing.assert_allclose(np.stack(got, 1), want, atol=1e-4)


def test_the_digit_conditions_the_output(tiny_model):
    codes = np.full((2, 10), 100, np.int32)
    out = tiny_model(codes, np.array([1, 2], np.int32)).numpy()
    assert np.abs(out[0] - out[1]).max() > 1e-3


def test_onnx_step_graph_equals_onnx_network(trained):
    from zoo.runtime.audio import StepRunner

    export = runtime.load(trained("wavenet")["export"])
    info = export.runtime
    length = 2 * info["receptive_field"] + 3
    codes = np.random.default_rng(1).integers(0, 256, (2, length)).astype(np.int32)
    digit = np.array([4, 9], np.int32)
    want = export.run("network", {"samples": codes, "digit": digit})["logits"]
    keras_want = trained("wavenet")["model"](codes, digit).numpy()
    np.testing.assert_allclose(want, keras_want, atol=1e-4)
    step = StepRunner(export, 2)
    got = np.stack([step(codes[:, t], digit).copy() for t in range(length)], 1)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_wavenet_export_and_metrics(trained):
    folder = trained("wavenet")["export"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert list(manifest["graphs"]) == ["step", "network"]
    step_inputs = [i["name"] for i in manifest["graphs"]["step"]["inputs"]]
    n = len(manifest["runtime"]["dilations"])
    assert step_inputs == ["sample", "digit"] + [f"queue.{i}" for i in range(n)]
    assert [o["name"] for o in manifest["graphs"]["step"]["outputs"]] == ["logits"] + [f"next_queue.{i}" for i in range(n)]
    metrics = manifest["metrics"]
    assert metrics["test_speaker"] == "theo" and metrics["test_clips"] == 30
    assert 0 < metrics["test_nll_bits_per_sample"] <= 8.5  # a tiny, barely trained model: near uniform
    assert 0 <= metrics["generated_digit_accuracy"] <= 1 and 0 <= metrics["classifier_test_accuracy"] <= 1
    assert {f"samples/digit_{d}.wav" for d in range(10)} <= set(manifest["files"])


def test_teacher_forced_nll_counts_every_real_sample(trained):
    model = trained("wavenet")["model"]
    codes = [np.array([128, 3, 250, 7]), np.array([128, 9])]
    digits = np.array([1, 2], np.int32)
    logits = [model(c[None, :-1], digits[i : i + 1]).numpy()[0] for i, c in enumerate(codes)]
    nll = [-(l - np.log(np.exp(l).sum(-1, keepdims=True)))[np.arange(len(c) - 1), c[1:]] for l, c in zip(logits, codes)]
    want = np.concatenate(nll).mean()
    assert wavenet.teacher_forced_nll(model, codes, digits) == pytest.approx(want, rel=1e-5)


def test_generation_is_seeded_and_checks_its_request(trained):
    export = runtime.load(trained("wavenet")["export"])
    a = generate(export, "1,5", seconds=0.005, seed=3)
    assert a.shape == (2, 40) and np.abs(a).max() <= 1
    np.testing.assert_array_equal(a, generate(export, [1, 5], seconds=0.005, seed=3))
    with pytest.raises(ValueError, match="digits must be in 0..9"):
        generate(export, "11")
    with pytest.raises(ValueError, match="at least one sample"):
        generate(export, "1", seconds=0)


def test_audio_runtime_without_tensorflow(trained, tmp_path):
    export = trained("wavenet")["export"]
    lines = run_runtime_cli("sample", export, "--digits", "2,7", "--seconds", "0.01", "--out", tmp_path)
    assert lines[-1] == "LOADED []"
    audio, rate = read_wav(tmp_path / "digit_7.wav")
    assert rate == 8000 and audio.shape == (80,)


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
    codes = np.concatenate(parts["test"][0])
    assert codes.min() >= 0 and codes.max() <= 255
