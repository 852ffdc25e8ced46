"""diffusion: shared schedule, objective, EMA, save/load, export, and runtime == TensorFlow sampling."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.test_runtime import run_runtime_cli
from zoo import registry, runtime
from zoo.models import diffusion, load_model
from zoo.runtime import diffusion as dmath
from zoo.runtime.images import denoiser


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    m = diffusion.build_model(registry.preset("diffusion", "tiny"))
    for w in m.network.weights:  # nonzero everywhere (two convs start at zero), so outputs depend on inputs
        w.assign(np.random.default_rng(len(w.path)).normal(0, 0.2, w.shape).astype(np.float32))
    m.ema_network.set_weights(m.network.get_weights())
    return m


def test_training_noises_with_the_cosine_schedule(model):
    """The training objective's x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, with abar from the
    cosine schedule's closed form (Nichol & Dhariwal, 2021; each beta clipped at 0.999)."""
    steps, s = 50, 0.008
    f = np.cos((np.arange(steps + 1) / steps + s) / (1 + s) * np.pi / 2) ** 2
    alpha_bar = np.cumprod(1 - np.minimum(1 - f[1:] / f[:-1], 0.999))
    np.testing.assert_allclose(model.schedule.alpha_bar, alpha_bar, rtol=1e-12)
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28, 1)).astype(np.uint8)
    (x_t, t, _), noise = model._noised(tf.constant(images), tf.constant([1] * 6), step=3)
    a = alpha_bar[t.numpy()][:, None, None, None]
    want = np.sqrt(a) * (images / 127.5 - 1) + np.sqrt(1 - a) * noise.numpy()
    np.testing.assert_allclose(x_t.numpy(), want, atol=1e-5)


def test_epsilon_depends_on_image_time_and_label(model):
    x = np.random.default_rng(0).standard_normal((2, 28, 28, 1)).astype(np.float32)
    base = model(x, tf.constant([3, 3]), tf.constant([1, 1])).numpy()
    assert base.shape == (2, 28, 28, 1)
    assert not np.allclose(base, model(x, tf.constant([30, 30]), tf.constant([1, 1])).numpy())
    other = model(x, tf.constant([3, 3]), tf.constant([1, diffusion.NULL_LABEL])).numpy()  # row 1: no label
    np.testing.assert_allclose(other[0], base[0], atol=1e-6)
    assert np.abs(other[1] - base[1]).max() > 1e-4


def test_noised_inputs_follow_the_schedule_and_drop_labels(model):
    images = np.full((400, 28, 28, 1), 255, np.uint8)
    labels = np.full(400, 4, np.int32)
    (x_t, t, label), noise = model._noised(images, labels)
    a = model.schedule.alpha_bar[t.numpy()].reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(x_t.numpy(), np.sqrt(a) * 1.0 + np.sqrt(1 - a) * noise.numpy(), atol=1e-5)
    dropped = (label.numpy() == diffusion.NULL_LABEL).mean()
    assert set(np.unique(label.numpy())) <= {4, diffusion.NULL_LABEL}
    assert 0.03 < dropped < 0.2  # label_dropout 0.1


def test_train_step_moves_the_ema_by_one_minus_decay():
    keras.utils.set_random_seed(1)
    m = diffusion.build_model(registry.preset("diffusion", "tiny", ["ema_decay=0.9"]))
    m.compile(optimizer=keras.optimizers.Adam(1e-2))  # the preset's warm-up starts at a rate of 0
    before = [w.numpy() for w in m.ema_network.weights]
    m.train_step((tf.zeros((4, 28, 28, 1), tf.uint8), tf.constant([0, 1, 2, 3])))
    for ema, w, old in zip(m.ema_network.weights, m.network.weights, before):
        np.testing.assert_allclose(ema.numpy(), 0.9 * old + 0.1 * w.numpy(), atol=1e-6)
    assert any(not np.allclose(w.numpy(), old) for w, old in zip(m.network.weights, before))


def test_save_and_load_keep_both_networks(model, tmp_path):
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    x = np.random.default_rng(3).standard_normal((2, 28, 28, 1)).astype(np.float32)
    t, label = tf.constant([0, 49]), tf.constant([7, 10])
    np.testing.assert_allclose(loaded(x, t, label).numpy(), model(x, t, label).numpy(), atol=1e-6)
    assert loaded.get_config()["widths"] == [8, 8, 16]


def test_diffusion_export_and_runtime_reproduce_the_tensorflow_sampler(trained):
    run = trained("diffusion")
    folder, cfg = run["export"], run["cfg"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [i["name"] for i in manifest["graphs"]["denoiser"]["inputs"]] == ["x_t", "t", "label"]
    assert manifest["runtime"]["schedule"] == {"kind": "cosine", "steps": 50}
    for key in ("ddim5_fid", "ddim5_class_accuracy", "ddim5_images_per_second", "ddpm50_fid",
                "ddim5_guidance1_fid"):
        assert key in manifest["metrics"]
    assert "samples.png" in manifest["files"] and "| DDPM 50 | 50 |" in (folder / "README.md").read_text()
    assert "| DDIM 5, guidance 1 | 5 |" in (folder / "README.md").read_text()

    export = runtime.load(folder)
    model = load_model(run["run"] / "model.keras")
    schedule = dmath.Schedule(**manifest["runtime"]["schedule"])
    labels = np.array([0, 3, 9, 5], np.int32)
    for sampler, steps, guidance in (("ddim", 10, 2.0), ("ddpm", 50, 1.5)):
        kwargs = dict(sampler=sampler, steps=steps, guidance=guidance, seed=5)
        with_tf = dmath.sample(diffusion.tf_denoiser(model), schedule, labels, **kwargs)
        with_onnx = dmath.sample(denoiser(export), schedule, labels, **kwargs)
        assert with_tf.shape == (4, 28, 28, 1)
        assert np.abs(with_tf - with_onnx).max() <= 1e-3, (sampler, np.abs(with_tf - with_onnx).max())


def test_diffusion_runtime_cli_without_tensorflow(trained, tmp_path):
    export = trained("diffusion")["export"]
    out = tmp_path / "grid.png"
    lines = run_runtime_cli("sample", export, "--labels", "1,2", "--per-label", "3", "--steps", "4",
                            "--guidance", "2", "--out", out)
    assert lines[-1] == "LOADED []" and out.exists()
    from PIL import Image

    assert Image.open(out).size == (2 * (3 * 30 + 2), 2 * (2 * 30 + 2))


def test_sampler_options_are_checked():
    assert dmath.parse_sampler("ddim-50") == ("ddim", 50, None)
    assert dmath.parse_sampler("ddpm-1000@1.5") == ("ddpm", 1000, 1.5)
    assert diffusion.row_key("ddim-50@2") == "ddim50_guidance2"
    for bad in ("ddim50", "dpm-5", "ddim-5@x", "ddim-5@-1"):
        with pytest.raises(ValueError, match="ddim-50"):
            dmath.parse_sampler(bad)
    with pytest.raises(ValueError, match="DDPM runs all"):
        dmath.sample(lambda x, t, l: x, dmath.Schedule("linear", 10), [0], sampler="ddpm", steps=5)
