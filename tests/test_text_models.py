"""The recurrent character models: shapes, state carrying, learning, config and saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import INT8_MARGIN, RECURRENT, TEXT_MODELS, mock_data
from zoo import data as zdata
from zoo.runtime.core import INT8_CPU_FLAGS
from zoo import registry

VOCAB = "\n !,.:;?abcdefghijklmnopqrstuvwxyz"


def build(name, **overrides):
    module = registry.get(name)
    cfg = registry.preset(name, "tiny", [f"{k}={v}" for k, v in overrides.items()])

    class Data:
        vocabulary = VOCAB
        steps_per_epoch = 10

    return module.build_model(cfg, Data), cfg


@pytest.mark.parametrize("name", RECURRENT)
def test_shapes_and_state(name):
    model, _ = build(name)
    tokens = np.random.default_rng(0).integers(0, len(VOCAB), (3, 9)).astype(np.int32)
    logits, state = model(tokens)
    assert logits.shape == (3, 9, len(VOCAB))
    assert [s.shape for s in state] == [(3, size) for _, size in model.state_sizes]


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_carried_state_equals_one_long_call(name):
    model, _ = build(name)
    tokens = np.random.default_rng(1).integers(0, len(VOCAB), (2, 10)).astype(np.int32)
    whole, _ = model(tokens)  # the transformer's state is its key/value cache
    first, state = model(tokens[:, :6])
    second, _ = model(tokens[:, 6:], state)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, atol=1e-5)


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_a_few_steps_reduce_the_loss(name):
    keras.utils.set_random_seed(0)
    model, _ = build(name, learning_rate=0.02, epochs=1)
    text = "the cat sat on the mat. " * 20
    ids = np.array([VOCAB.index(c) for c in text], np.int32)
    x = np.stack([ids[i : i + 12] for i in range(0, 400, 7)])
    y = np.stack([ids[i + 1 : i + 13] for i in range(0, 400, 7)])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    before = model.evaluate(ds, verbose=0)
    model.fit(ds.repeat(), steps_per_epoch=60, epochs=1, verbose=0)
    after = model.evaluate(ds, verbose=0)
    assert after < before - 1.0, (before, after)  # from ~ln(33) to below the text's unigram entropy


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_get_config_round_trip(name):
    model, _ = build(name)
    clone = model.__class__.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    clone.build((None, None))
    clone.set_weights(model.get_weights())
    tokens = np.arange(8, dtype=np.int32)[None]
    np.testing.assert_allclose(clone(tokens)[0], model(tokens)[0], atol=1e-6)


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_keras_save_and_safe_load_then_fine_tune(name, tmp_path):
    from zoo.models import load_model

    model, _ = build(name)
    tokens = np.arange(8, dtype=np.int32)[None]
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")  # safe_mode=True
    assert type(loaded) is type(model) and loaded.vocabulary == VOCAB
    np.testing.assert_allclose(loaded(tokens)[0], model(tokens)[0], atol=1e-6)
    ds = tf.data.Dataset.from_tensor_slices((tokens, tokens)).batch(1)
    history = loaded.fit(ds, epochs=1, verbose=0)  # compiled from the saved config
    assert np.isfinite(history.history["loss"][0])


def test_lstm_exports_an_int8_step_that_the_runtime_runs_on_request(trained):
    from zoo.runtime import load
    from zoo.runtime.text import sample_text

    out = trained("lstm")["export"]
    export = load(out)  # verifies every file, step.int8.onnx included
    variant = export.graph("step")["variants"]["int8"]
    assert variant["onnx"] == "step.int8.onnx" and "step.int8.onnx" in export.manifest["files"]
    assert variant["domains"] == {"com.microsoft": 1}  # DynamicQuantizeLSTM
    # made so that no CPU's int8 kernels saturate (7-bit weights), and says on which CPU it was measured
    assert variant["quantize_dynamic"] == {"op_types_to_quantize": ["LSTM", "MatMul"], "per_channel": True,
                                           "reduce_range": True}
    assert set(variant["measured_on"]["flags"]) <= set(INT8_CPU_FLAGS) and variant["measured_on"]["cpu"]
    assert variant["test"] is not None or variant["test_note"].startswith("not measured: ")
    prompt = export.runtime["vocabulary"][-1]
    fp32 = sample_text(export, prompt, length=20, temperature=0.0)
    int8 = sample_text(export, prompt, length=20, temperature=0.0, precision="int8")
    assert len(int8[0]) == len(fp32[0]) == 21
    assert export.session("step", precision="int8") is not export.session("step")
    assert "Precision variants" in (out / "README.md").read_text()


def test_a_precision_the_export_lacks_is_one_line_error(trained):
    from zoo.runtime import load
    from zoo.runtime.text import sample_text

    export = load(trained("rnn")["export"])
    with pytest.raises(ValueError, match=r"graph 'step' of .* has no int8 variant \(it has: fp32\)"):
        sample_text(export, export.runtime["vocabulary"][0], length=3, precision="int8")


def test_onnx_scoring_of_variants_equals_keras_recurrent_nll(trained):
    from zoo.models import text
    from zoo.models.lstm import variant_metrics

    t = trained("lstm")
    with mock_data():
        ids = zdata.encode(zdata.load_text(t["cfg"].dataset, "test"), t["model"].vocabulary)
        keras_nats = text.recurrent_nll(t["model"], ids)["nats_per_char"]
        scores = variant_metrics(t["export"], "step", {"fp32": "step.onnx", "int8": "step.int8.onnx"},
                                 load_runtime_info(t["export"]), {"dataset": t["cfg"].dataset})
    assert scores["fp32"]["test_nats_per_char"] == pytest.approx(keras_nats, abs=1e-5)
    # what a user of the variant cares about, on any CPU: its test loss within INT8_MARGIN of fp32's
    assert abs(scores["int8"]["test_nats_per_char"] - scores["fp32"]["test_nats_per_char"]) <= INT8_MARGIN
    # In short chunks the state must be carried from one call to the next to give the same figure.
    import onnxruntime as ort

    session = ort.InferenceSession(str(t["export"] / "step.onnx"), providers=["CPUExecutionProvider"])
    sizes = [(name, size) for name, size in t["model"].state_sizes]
    assert text.recurrent_nll_onnx(session, ids, sizes, chunk=3) == pytest.approx(keras_nats, abs=1e-5)


def load_runtime_info(folder):
    import json

    return json.loads((folder / "manifest.json").read_text())["runtime"]
