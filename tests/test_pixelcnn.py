"""pixelcnn: masks, no blind spot, strips equal whole images, NLL, export and pixel-by-pixel sampling."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import registry, runtime
from zoo.models import pixelcnn


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    m = pixelcnn.build_model(registry.preset("pixelcnn", "tiny", ["conditional=true"]))
    for w in m.trainable_weights:  # larger random weights, so no dependency vanishes numerically
        w.assign(np.random.default_rng(len(w.path)).normal(0, 0.5, w.shape).astype(np.float32))
    return m


def dependencies(model, i, j):
    """Which input pixels the logit of pixel (i, j) depends on: a boolean [28, 28]."""
    image = tf.constant((np.random.default_rng(i * 28 + j).random((1, 28, 28, 1)) < 0.5).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(image)
        logit = model(image, tf.constant([3]))[0, i, j, 0]
    return np.abs(tape.gradient(logit, image).numpy()[0, :, :, 0]) > 0


@pytest.mark.parametrize("i, j", [(0, 0), (0, 5), (5, 0), (10, 13), (27, 27), (14, 26)])
def test_each_logit_sees_only_pixels_before_it_and_has_no_blind_spot(model, i, j):
    seen = dependencies(model, i, j)
    rows, cols = np.indices((28, 28))
    before = (rows < i) | ((rows == i) & (cols < j))
    assert not (seen & ~before).any(), "a logit depends on its own pixel or a later one"
    above = model.rows_above  # tiny: 1 + 2 layers = 3 rows, and columns up to 3 either side
    reach = (rows < i) & (rows >= i - above) & (np.abs(cols - j) <= 1)
    reach |= (rows == i) & (cols < j) & (cols >= j - 3)
    assert seen[reach].all(), "a pixel in the receptive field (including the up-right blind spot) is unseen"
    if i >= 1 and j + 2 < 28:
        assert seen[i - 1, j + 2]  # where the original PixelCNN's stacked masks were blind


def test_masks(model):
    assert model.blocks[0].vertical.mask()[..., 0, 0].tolist() == [[1, 1, 1], [0, 0, 0], [0, 0, 0]]  # A, 3 x 3
    assert model.blocks[1].vertical.mask()[..., 0, 0].tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0]]  # B
    assert model.blocks[0].horizontal.mask()[..., 0, 0].tolist() == [[1, 0, 0]]  # A, 1 x 3
    assert model.blocks[1].horizontal.mask()[..., 0, 0].tolist() == [[1, 1, 0]]  # B


def test_a_strip_of_rows_gives_the_whole_images_logits(model):
    image = (np.random.default_rng(1).random((2, 28, 28, 1)) < 0.4).astype(np.float32)
    label = tf.constant([1, 7])
    full = model(image, label).numpy()
    above = model.rows_above
    for i in (0, 2, above, 17, 27):
        top = max(0, i - above)
        strip = model(image[:, top : i + 1], label).numpy()
        np.testing.assert_allclose(strip[:, -1], full[:, i], atol=1e-5)


def test_nll_is_the_sum_of_pixel_cross_entropies(model):
    x = (np.random.default_rng(2).random((3, 28, 28, 1)) < 0.3).astype(np.float32)
    labels = tf.constant([0, 1, 2])
    p = tf.sigmoid(model(x, labels)).numpy().astype(np.float64)
    want = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(model.nll(x, labels).numpy(), want, rtol=1e-4)


def test_fixed_binarization_is_fixed():
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)).astype(np.uint8)
    a, b = pixelcnn.fixed_binarization(images, 5), pixelcnn.fixed_binarization(images, 5)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0, 255}
    assert (a[images == 0] == 0).all() and (a[images == 255] == 255).all()


def test_pixelcnn_export_and_sampling(trained):
    from zoo.runtime.images import sample_pixels

    folder = trained("pixelcnn")["export"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [i["name"] for i in manifest["graphs"]["network"]["inputs"]] == ["image"]
    assert {"test_nll_nats", "test_bits_per_dim"} <= set(manifest["metrics"])
    assert 0 < manifest["metrics"]["test_nll_nats"] < 784 * 2
    assert "samples.png" in manifest["files"]
    export = runtime.load(folder)
    labels = np.zeros(3, np.int32)
    strips = sample_pixels(export, labels, np.random.default_rng(4))
    whole = sample_pixels(export, labels, np.random.default_rng(4), full_image=True)
    assert strips.shape == (3, 28, 28) and set(np.unique(strips)) <= {0.0, 1.0}
    np.testing.assert_array_equal(strips, whole)  # the strip shortcut changes nothing
