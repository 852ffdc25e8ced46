"""The transformer: cached generation equals full recomputation, in Keras and in ONNX."""

import json

import numpy as np
import onnx
import pytest

from tests.conftest import INT8_MARGIN
from zoo import registry, runtime
from zoo.runtime.core import INT8_CPU_FLAGS

VOCAB = "\n !,.:;?abcdefghijklmnopqrstuvwxyz"


def tiny_model(**overrides):
    module = registry.get("transformer")
    cfg = registry.preset("transformer", "tiny", [f"{k}={v}" for k, v in overrides.items()])

    class Data:
        vocabulary = VOCAB
        steps_per_epoch = 10

    return module.build_model(cfg, Data)


def test_cached_logits_equal_full_recomputation_in_keras():
    model = tiny_model()
    tokens = np.random.default_rng(0).integers(0, len(VOCAB), (3, 14)).astype(np.int64)
    full, cache = model(tokens)
    assert full.shape == (3, 14, len(VOCAB))
    assert len(cache) == 4 and cache[0].shape == (3, 2, 14, 8)  # 2 layers x (key, value), heads first
    logits, cache = model(tokens[:, :5])  # prefill 5, then one token at a time
    steps = [logits]
    for t in range(5, 14):
        logits, cache = model(tokens[:, t : t + 1], cache)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-4)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_written_out_attention_equals_keras_multi_head_attention(dropout):
    """CachedSelfAttention computes its attention itself (a smaller ONNX graph); Keras's own
    `_compute_attention` on the same projections and causal mask must agree, with and without
    dropout (Keras takes a different path at dropout 0)."""
    from keras import ops

    from zoo.models.transformer import CachedSelfAttention

    layer = CachedSelfAttention(2, 8, dropout=dropout)
    layer.build((None, None, 16))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 16)).astype(np.float32)
    past_key, past_value = rng.standard_normal((2, 2, 2, 3, 8)).astype(np.float32)
    y, key, value = layer(x, past_key, past_value)
    assert key.shape == value.shape == (2, 2, 8, 8)  # [batch, heads, 3 + 5 positions, head_dim]
    mask = np.arange(8)[None, :] <= np.arange(3, 8)[:, None]
    key, value = (np.transpose(t, (0, 2, 1, 3)) for t in (key, value))  # Keras's [batch, length, heads, dim]
    reference, _ = layer._compute_attention(layer._query_dense(x), key, value,
                                            attention_mask=ops.convert_to_tensor(np.broadcast_to(mask, (2, 5, 8))))
    np.testing.assert_allclose(y, layer._output_dense(reference), atol=1e-5)


def test_windowed_evaluation_scores_every_character_once():
    from zoo.models.transformer import windowed_nll

    model = tiny_model()
    ids = np.random.default_rng(1).integers(0, len(VOCAB), 203).astype(np.int32)
    result = windowed_nll(model, ids, window=16, batch=5)
    assert result["chars_scored"] == len(ids) - 1
    assert 0 < result["nats_per_char"] < 2 * np.log(len(VOCAB))


def test_onnx_decoder_names_and_cached_parity(trained):
    run = trained("transformer")
    model, folder = run["model"], run["export"]
    proto = onnx.load(str(folder / "decoder.onnx"))
    past = [f"past_key_values.{i}.{k}" for i in range(2) for k in ("key", "value")]
    assert [i.name for i in proto.graph.input] == ["input_ids", "position_ids"] + past
    assert [o.name for o in proto.graph.output] == ["logits"] + [p.replace("past_key_values", "present") for p in past]
    dims = {vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in list(proto.graph.input) + list(proto.graph.output)}
    assert dims["past_key_values.0.key"] == dims["present.1.value"] == ["batch", 2, "capacity", 8]

    export = runtime.load(folder)
    vocab = len(export.runtime["vocabulary"])
    tokens = np.random.default_rng(3).integers(0, vocab, (2, 12)).astype(np.int64)
    want = np.asarray(model(tokens)[0])
    # A cache of the whole context (16), noise after the positions written so far: the graph writes
    # each call's keys and values at its positions and reads only up to them.
    noise = np.random.default_rng(4).standard_normal((2, 2, 16, 8)).astype(np.float32)
    feed = {"input_ids": tokens[:, :4], "position_ids": np.tile(np.arange(4), (2, 1)), **{p: noise for p in past}}
    out = export.run("decoder", feed)
    got = [out["logits"]]
    for t in range(4, 12):
        present = {p: out[p.replace("past_key_values", "present")] for p in past}
        for p in past:  # positions t and on: zeros in a present not bound to its past's buffer
            assert not present[p][:, :, t:].any()
        feed = {"input_ids": tokens[:, t : t + 1], "position_ids": np.full((2, 1), t, np.int64), **present}
        out = export.run("decoder", feed)
        got.append(out["logits"])
    np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=1e-4)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["runtime"]["kind"] == "text-cached" and manifest["runtime"]["max_context"] == 16


def test_runtime_slides_or_refuses_at_the_maximum_context(trained):
    export = runtime.load(trained("transformer")["export"])
    prompt = export.runtime["sample_defaults"]["prompt"]
    long = runtime.sample_text(export, prompt, length=40, seed=2, batch=2)  # context is 16
    assert [len(t) for t in long] == [len(prompt) + 40] * 2
    assert long == runtime.sample_text(export, prompt, length=40, seed=2, batch=2)
    fits = runtime.sample_text(export, prompt, length=16 - len(prompt), on_full="refuse")
    assert len(fits[0]) == 16
    with pytest.raises(ValueError, match="exceed the model's context of 16"):
        runtime.sample_text(export, prompt, length=17 - len(prompt), on_full="refuse")


def test_sliding_continues_from_the_last_half_of_the_context(trained):
    """After the cache fills, the next logits are those of a fresh prefill of the last 8 tokens."""
    export = runtime.load(trained("transformer")["export"])
    model = trained("transformer")["model"]
    prompt = export.runtime["sample_defaults"]["prompt"]
    text = runtime.sample_text(export, prompt, length=18 - len(prompt), temperature=0, seed=0)[0]
    vocab = export.runtime["vocabulary"]
    ids = np.array([[vocab.index(c) for c in text]], np.int64)
    # Characters 0..15 fill the cache; greedy character 17 must then be the argmax after
    # re-reading characters 9..16 from position 0, and character 16 the argmax with the full cache.
    assert vocab[int(np.asarray(model(ids[:, :16])[0])[0, -1].argmax())] == text[16]
    assert vocab[int(np.asarray(model(ids[:, 9:17])[0])[0, -1].argmax())] == text[17]


@pytest.mark.parametrize("cache_step", [64, 4])  # the tiny context of 16 in one capacity, or growing by 4
def test_runtime_cached_greedy_text_equals_keras_recomputation(trained, monkeypatch, cache_step):
    """The runtime's cache loop picks, at every step, Keras's argmax over the whole text."""
    from zoo.runtime import text as runtime_text

    monkeypatch.setattr(runtime_text, "CACHE_STEP", cache_step)
    export = runtime.load(trained("transformer")["export"])
    model = trained("transformer")["model"]
    prompt = export.runtime["sample_defaults"]["prompt"]
    vocab = export.runtime["vocabulary"]
    text = runtime.sample_text(export, prompt, length=15 - len(prompt), temperature=0, batch=2)
    assert text[0] == text[1]
    for n in range(len(prompt), 15):
        ids = np.array([[vocab.index(c) for c in text[0][:n]]], np.int64)
        assert vocab[int(np.asarray(model(ids)[0])[0, -1].argmax())] == text[0][n]


def test_int8_decoder_variant_is_scored_like_keras_and_sampled_on_request(trained):
    from zoo.data import encode, load_text
    from zoo.models.transformer import variant_metrics, windowed_nll
    from zoo.runtime.text import sample_text

    from tests.conftest import mock_data

    run = trained("transformer")
    folder, model = run["export"], run["model"]
    export = runtime.load(folder)  # verifies every file, decoder.int8.onnx included
    variant = export.graph("decoder")["variants"]["int8"]
    assert variant["onnx"] == "decoder.int8.onnx"
    # made so that no CPU's int8 kernels saturate (7-bit weights), and says on which CPU it was measured
    assert variant["quantize_dynamic"] == {"op_types_to_quantize": ["MatMul"], "reduce_range": True}
    assert set(variant["measured_on"]["flags"]) <= set(INT8_CPU_FLAGS) and variant["measured_on"]["cpu"]
    ops = {n.op_type for n in onnx.load(str(folder / "decoder.int8.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    with mock_data():
        ids = encode(load_text(run["cfg"].dataset, "test"), model.vocabulary)
        keras_nats = windowed_nll(model, ids, model.max_context)["nats_per_char"]
        scores = variant_metrics(folder, "decoder", {"fp32": "decoder.onnx", "int8": "decoder.int8.onnx"},
                                 export.runtime, {"dataset": run["cfg"].dataset})
    assert scores["fp32"]["test_nats_per_char"] == pytest.approx(keras_nats, abs=1e-5)
    # what a user of the variant cares about, on any CPU: its test loss within INT8_MARGIN of fp32's
    assert abs(scores["int8"]["test_nats_per_char"] - scores["fp32"]["test_nats_per_char"]) <= INT8_MARGIN
    prompt = export.runtime["vocabulary"][-1]
    fp32 = sample_text(export, prompt, length=30, temperature=0.0)  # past the context: the slide too
    int8 = sample_text(export, prompt, length=30, temperature=0.0, precision="int8")
    assert len(int8[0]) == len(fp32[0]) == 31
    int8_file = str(folder / "decoder.int8.onnx")  # the int8 graph ran: prefill, decoding and the slide
    assert sum(s._model_path == int8_file for s in export._sessions.values()) == 1  # one session for all calls
    # The standard-ops variant in the same loop (cache bound in place): the fp32 graph's text, greedy and seeded.
    for opts in (dict(temperature=0.0), dict(temperature=1.0, seed=4, batch=3)):
        assert sample_text(export, prompt, length=30, precision="standard", **opts) == \
            sample_text(export, prompt, length=30, **opts)
    standard_file = str(folder / "decoder.standard.onnx")
    assert sum(s._model_path == standard_file for s in export._sessions.values()) == 1


def test_cached_decoder_binds_its_cache_once_and_the_graph_writes_it_in_place(trained, monkeypatch):
    """CachedDecoder binds each capacity's buffers as both past and present when it first uses it;
    a call binds only its ids, positions and logits when their length changed, and leaves its keys in
    the bound buffer at its positions; the cache grows by copying into the next capacity. Misuse is
    refused."""
    from zoo.runtime import text
    from zoo.runtime.core import ExportFormatError

    export = runtime.load(trained("transformer")["export"])
    monkeypatch.setattr(text, "CACHE_STEP", 4)
    decoder = text.CachedDecoder(export, batch=2)
    assert [text.cpu_capacity(n, decoder.limit) for n in (1, 4, 5, 13, 16)] == [4, 4, 8, 16, 16]
    written = lambda cache: np.abs(cache).sum(axis=(0, 1, 3)) > 0  # noqa: E731 -- per position

    decoder.prefill(np.ones((2, 5), np.int64))
    level = decoder._level
    assert level.capacity == 8 and list(decoder._levels) == [8]
    assert written(level.arrays[0]).tolist() == [True] * 5 + [False] * 3  # zeros after the prompt
    before = level.arrays[0].copy()
    for _ in range(3):
        logits = decoder.step(np.array([2, 3]))
    assert decoder._level is level and written(level.arrays[0]).all()  # each step wrote its own position
    np.testing.assert_array_equal(level.arrays[0][:, :, :5], before[:, :, :5])  # the prompt's keys stay
    decoder.step(np.array([2, 3]))  # position 8: the cache grows into the next capacity
    grown = decoder._level
    assert grown.capacity == 12 and decoder.cached == 9 and logits.shape == (2, len(export.runtime["vocabulary"]))
    for small, large in zip(level.arrays, grown.arrays):
        np.testing.assert_array_equal(large[:, :, :8], small)
    assert written(grown.arrays[0]).tolist() == [True] * 9 + [False] * 3
    assert level._shapes == {"prefill": 5, "step": 1} and grown._shapes == {"step": 1}
    decoder.prefill(np.ones((2, 5), np.int64))  # again: the same buffers, nothing new bound
    decoder.step(np.array([2, 3]))
    assert list(decoder._levels) == [8, 12] and decoder._level is level and level._shapes["prefill"] == 5

    first = text.CachedDecoder(export, batch=2).step(np.array([2, 3]))  # a new decoder steps from position 0
    np.testing.assert_allclose(first, decoder.prefill(np.array([[2], [3]])), atol=1e-6)

    with pytest.raises(ValueError, match="a prefill takes 1 to 16 positions"):
        decoder.prefill(np.zeros((2, 17), np.int64))
    with pytest.raises(ValueError, match="the cache of 2 sequences, got ids of 3"):
        decoder.prefill(np.zeros((3, 4), np.int64))
    with pytest.raises(ValueError, match="a step takes ids of shape"):
        decoder.step(np.array([1, 2, 3]))
    decoder.prefill(np.ones((2, 16), np.int64))
    with pytest.raises(ValueError, match="16 cached \\+ 1 new positions exceed the model's context of 16"):
        decoder.step(np.array([1, 2]))
    monkeypatch.setitem(export.runtime, "cache", "grown")
    with pytest.raises(ExportFormatError, match="cache is 'grown'.*export it again"):
        text.CachedDecoder(export, batch=1)


def test_a_kept_decoder_samples_the_same_text_as_a_new_one(trained, monkeypatch):
    """sample_text keeps its decoder (cache buffers and bindings) on the export for later calls, which
    sample what a new decoder samples; how many it keeps is bounded."""
    from zoo.runtime import text

    export = runtime.load(trained("transformer")["export"])
    prompt = export.runtime["sample_defaults"]["prompt"]
    args = dict(length=40, temperature=0.8, seed=1, batch=2)  # the tiny context is 16: it slides
    first = runtime.sample_text(export, prompt, **args)
    (decoder,) = text._kept[export]
    assert runtime.sample_text(export, prompt, **args) == first and text._kept[export] == [decoder]
    text.release_decoders(export)
    assert runtime.sample_text(export, prompt, **args) == first and text._kept[export][0] is not decoder

    def fill(decoder):  # a whole context: its cache buffers at full capacity
        decoder.prefill(np.zeros((decoder.batch, 16), np.int64))

    with text.kept_decoder(export, 1) as a, text.kept_decoder(export, 1) as b:
        assert a is not b  # a decoder serves one caller at a time
        fill(a), fill(b)
    with text.kept_decoder(export, 1) as c, text.kept_decoder(export, 3) as d:
        assert c is a and d.batch == 3  # the most recently kept (a left last)
        fill(d)
    assert [k.batch for k in text._kept[export]] == [3, 1]  # at most KEPT_DECODERS: b, the oldest, dropped
    assert d.nbytes == 3 * a.nbytes > 0
    monkeypatch.setattr(text, "KEPT_BYTES", 3 * a.nbytes)  # and at most KEPT_BYTES of cache buffers
    with text.kept_decoder(export, 1) as e:
        assert e is a
    assert text._kept[export] == [a]  # 3 + 1 sequences' buffers were over the budget: the oldest went
    with text.kept_decoder(export, 5) as f:
        fill(f)
    assert text._kept[export] == []  # 5 sequences' buffers are over it alone
