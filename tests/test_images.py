"""gan and vae: training steps, saving, exports, image runtime, and the FID/classifier metrics."""

import json

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf

from tests.test_runtime import run_runtime_cli
from zoo import registry, runtime
from zoo.metrics.fid import fid, frechet_distance

IMAGE_MODELS = ["gan", "vae"]


def random_mnist(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28, 1)).astype(np.uint8), rng.integers(0, 10, n).astype(np.int32)


def test_fid_of_known_distributions():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5000, 3))
    assert abs(fid(a, a)) < 1e-6
    assert fid(a, a + [1.0, 2.0, 0.0]) == pytest.approx(5.0, abs=1e-6)  # same covariance: |shift|^2
    mu = np.zeros(3)
    # Diagonal covariances: sum (sqrt(s1) - sqrt(s2))^2 = 0 + 1 + 4.
    assert frechet_distance(mu, np.diag([1.0, 1, 1]), mu, np.diag([1.0, 4, 9])) == pytest.approx(5.0)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_train_step_reports_its_losses_and_saves(name, tmp_path):
    from zoo.models import load_model

    module = registry.get(name)
    model = module.build_model(registry.preset(name, "tiny"))
    images, labels = random_mnist()
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    history = model.fit(ds, epochs=1, steps_per_epoch=4, verbose=0).history
    wanted = {"gan": {"d_loss", "g_loss", "d_real"}, "vae": {"loss", "reconstruction", "kl"}}[name]
    assert wanted <= set(history) and all(np.isfinite(v[0]) for v in history.values())
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")  # safe mode; compiled from its saved config
    assert loaded.get_config() == model.get_config()
    z = np.random.default_rng(1).standard_normal((3, loaded.latent_dim)).astype(np.float32)
    if name == "gan":
        np.testing.assert_allclose(loaded(z, labels[:3]), model(z, labels[:3]), atol=1e-5)
    else:
        np.testing.assert_allclose(loaded.decode(z), model.decode(z), atol=1e-5)
    assert np.isfinite(loaded.fit(ds, epochs=1, steps_per_epoch=2, verbose=0).history[sorted(wanted)[0]][0])


def test_vae_elbo_decreases():
    keras.utils.set_random_seed(0)
    model = registry.get("vae").build_model(registry.preset("vae", "tiny", ["learning_rate=0.01"]))
    images, labels = random_mnist(64)
    images = np.tile((images[:4] > 127).astype(np.uint8) * 255, (16, 1, 1, 1))  # 4 binary patterns: learnable
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    before = model.evaluate(ds, verbose=0, return_dict=True)["loss"]
    model.fit(ds.repeat(), steps_per_epoch=60, epochs=1, verbose=0)
    after = model.evaluate(ds, verbose=0, return_dict=True)["loss"]
    assert after < before - 50, (before, after)


def test_importance_weighting_tightens_the_bound():
    from zoo.models.vae import binarize, importance_weighted_nll

    keras.utils.set_random_seed(0)
    model = registry.get("vae").build_model(registry.preset("vae", "tiny"))
    images, _ = random_mnist(20)
    x = binarize(images, seed=(0, 0))
    elbo = np.mean([np.mean(sum(model.elbo_terms(x, None, False)).numpy()) for _ in range(50)])
    nll_1 = importance_weighted_nll(model, x, None, k=200, chunk=200, seed=1).mean()
    nll_2 = importance_weighted_nll(model, x, None, k=200, chunk=50, seed=1).mean()
    assert nll_1 == pytest.approx(nll_2, rel=1e-3)  # other noise draws, the same estimate up to MC error
    assert nll_1 <= elbo + 1e-3  # -log p(x) <= -ELBO, and k samples tighten it


def test_gan_generator_export(trained):
    folder = trained("gan")["export"]
    proto = onnx.load(str(folder / "generator.onnx"))
    assert [i.name for i in proto.graph.input] == ["z", "label"]
    assert [o.name for o in proto.graph.output] == ["image"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"fid", "class_accuracy", "classifier_test_accuracy"} <= set(manifest["metrics"])
    assert "samples.png" in manifest["files"]
    export = runtime.load(folder)
    z = np.random.default_rng(0).standard_normal((4, manifest["runtime"]["latent_dim"])).astype(np.float32)
    labels = np.array([0, 1, 2, 3], np.int32)
    want = np.asarray(trained("gan")["model"](z, labels))
    np.testing.assert_allclose(export.run("generator", {"z": z, "label": labels})["image"], want, atol=1e-4)


def test_vae_decoder_and_encoder_exports(trained):
    folder = trained("vae")["export"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert list(manifest["graphs"]) == ["decoder", "encoder"]
    assert {"test_negative_elbo", "test_nll_iwae", "fid", "classifier_test_accuracy"} <= set(manifest["metrics"])
    assert "class_accuracy" not in manifest["metrics"]  # the default vae is unconditional
    export = runtime.load(folder)
    image = (np.random.default_rng(0).random((2, 28, 28, 1)) < 0.3).astype(np.float32)
    out = export.run("encoder", {"image": image})
    mean, log_variance = trained("vae")["model"].encode(image)
    np.testing.assert_allclose(out["mean"], mean, atol=1e-4)
    np.testing.assert_allclose(out["log_variance"], log_variance, atol=1e-4)
    probabilities = export.run("decoder", {"z": out["mean"]})["probabilities"]
    assert probabilities.shape == (2, 28, 28, 1) and 0 <= probabilities.min() and probabilities.max() <= 1


def test_image_sampling_and_errors(trained, tmp_path):
    from zoo.runtime.images import grid, sample_images, save_png

    export = runtime.load(trained("gan")["export"])
    images, labels = sample_images(export, "7,3", per_label=5, seed=4)
    assert images.shape == (2, 5, 28, 28) and images.dtype == np.uint8 and labels.tolist() == [7, 3]
    again, _ = sample_images(export, [7, 3], per_label=5, seed=4)
    np.testing.assert_array_equal(images, again)
    path = save_png(grid(images), tmp_path / "g.png")
    from PIL import Image

    assert Image.open(path).size == (2 * (5 * 30 + 2), 2 * (2 * 30 + 2))
    with pytest.raises(ValueError, match="labels must be in 0..9"):
        sample_images(export, "3,12")
    with pytest.raises(ValueError, match="integers separated by commas"):
        sample_images(export, "three")


@pytest.mark.parametrize("name", IMAGE_MODELS + ["pixelcnn"])
def test_image_runtime_without_tensorflow(name, trained, tmp_path):
    export = trained(name)["export"]
    out = tmp_path / "grid.png"
    lines = run_runtime_cli("sample", export, "--labels", "1,2", "--per-label", "3", "--out", out)
    assert lines[-1] == "LOADED []"
    assert out.exists()


def test_classifier_judge(trained, mock_tfds):
    import os
    from pathlib import Path

    from zoo import data

    trained("gan")  # evaluating the GAN trained the mock classifier on demand
    from zoo.metrics import classifier

    judge = classifier.load("mnist", train_if_missing=False)
    assert (Path(os.environ["ZOO_CLASSIFIERS"]) / "mnist" / "model.keras").exists()  # not in exports/
    images, _ = random_mnist(5)
    assert judge.features(images / 255.0).shape == (5, 128)
    assert judge.labels(images / 255.0).shape == (5,)
    x_test, y_test = data.image_arrays("mnist", "test")  # the (mock) test split it was scored on
    assert judge.info["test_accuracy"] == pytest.approx(float((judge.labels(x_test / 255.0) == y_test).mean()))


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_fashion_mnist_by_setting_the_dataset(name, tmp_path, mock_tfds):
    from zoo.evaluate import evaluate
    from zoo.train import train

    cfg = registry.preset(name, "tiny", ["dataset=fashion_mnist", "epochs=1"])
    model = train(name, cfg, "tiny", tmp_path / "run", verbose=0)
    metrics = evaluate(name, cfg, tmp_path / "run")
    import os
    from pathlib import Path

    from zoo.metrics import classifier

    info = json.loads((Path(os.environ["ZOO_CLASSIFIERS"]) / "fashion_mnist" / "info.json").read_text())
    assert info["dataset"] == "fashion_mnist"  # its own judge, which scored these samples:
    assert metrics["classifier_test_accuracy"] == info["test_accuracy"]
    assert classifier.load("fashion_mnist", train_if_missing=False).info == info
    assert metrics["fid"] > 1e-3 and model.get_config()["name"]
