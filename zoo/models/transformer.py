"""`transformer`: a GPT-style decoder character model on tiny_shakespeare, with a key/value cache.

Token and learned position embeddings, pre-LayerNorm decoder blocks (causal multi-head attention,
GELU MLP, residuals, dropout), a final LayerNorm and an output projection. The attention layers take
the projected keys and values of earlier positions and return them extended, so the same weights
run on a whole prompt (prefill, empty cache) or on one new token given the cache (decode).
"""

import dataclasses
import functools
import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from zoo import data as zdata
from zoo.models import text
from zoo.models.steps import Dropout
from zoo.onnx_build import GraphBuilder
from zoo.models.transformer_presets import Config, PRESETS, check_config  # noqa: F401 (hooks: zoo.registry.HOOKS)
from zoo.runtime.text import cache_names


DATASET = Config.dataset
SAMPLE_DEFAULTS = text.SAMPLE_DEFAULTS


@keras.saving.register_keras_serializable(package="zoo")
class CachedSelfAttention(keras.layers.MultiHeadAttention):
    """Causal self-attention that extends a cache of projected keys and values.

    `call(x[B,T,C], past_key[B,N,P,D], past_value[B,N,P,D])` attends from the T new positions to
    the P cached ones and to the new ones up to itself, and returns `(y, key[B,N,P+T,D], value)`.
    The cache is kept heads-first, the layout of the exported graph's inputs and outputs.
    """

    def build(self, input_shape):
        super().build(input_shape, input_shape)
        # on the attention weights: the zoo's Dropout, whose masks are one process's under a strategy
        self._dropout_layer = Dropout(self._dropout, dtype=self.dtype_policy, seed=self.seed)

    def call(self, x, past_key, past_value, training=False):
        query = self._query_dense(x)
        key = ops.concatenate([past_key, ops.transpose(self._key_dense(x), (0, 2, 1, 3))], axis=2)
        value = ops.concatenate([past_value, ops.transpose(self._value_dense(x), (0, 2, 1, 3))], axis=2)
        new, past = ops.shape(x)[1], ops.shape(past_key)[2]
        # Position past+i may see positions 0..past+i. Built here, not in build(): a constant
        # captured from outside the traced call would become a stray ONNX input.
        mask = ops.arange(past + new)[None, :] <= (ops.arange(new) + past)[:, None]  # [T, P+T]
        # Written out with plain batched matmuls rather than MultiHeadAttention._compute_attention,
        # which switches to ops.dot_product_attention when dropout is 0 (803 ONNX nodes for the
        # default preset instead of 567, and slower per generated token); keeping the cache
        # heads-first also spares the exported graph two transposes of every cache, every step.
        query = ops.transpose(query * self._inverse_sqrt_key_dim, (0, 2, 1, 3))  # [B, N, T, D]
        scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))  # [B, N, T, P+T]
        weights = ops.softmax(ops.where(mask, scores, -1e9), axis=-1)
        weights = self._dropout_layer(weights, training=training)
        y = ops.transpose(ops.matmul(weights, value), (0, 2, 1, 3))  # [B, T, N, D]
        return self._output_dense(y), key, value


@keras.saving.register_keras_serializable(package="zoo")
class DecoderBlock(keras.layers.Layer):
    """x + attention(norm(x)), then x + MLP(norm(x)): the GPT-2 pre-LayerNorm block."""

    def __init__(self, d_model, num_heads, mlp_ratio=4, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.num_heads, self.mlp_ratio, self.dropout_rate = d_model, num_heads, mlp_ratio, dropout
        self.norm_1 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm_1")
        self.attention = CachedSelfAttention(num_heads, d_model // num_heads, dropout=dropout, name="attention")
        self.norm_2 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm_2")
        self.mlp_in = keras.layers.Dense(mlp_ratio * d_model, name="mlp_in")
        self.mlp_out = keras.layers.Dense(d_model, name="mlp_out")
        self.dropout = Dropout(dropout)

    def build(self, input_shape):
        for layer in (self.norm_1, self.attention, self.norm_2, self.mlp_in):
            layer.build(input_shape)
        self.mlp_out.build((*input_shape[:-1], self.mlp_ratio * self.d_model))
        self.built = True

    def call(self, x, past_key, past_value, training=False):
        y, key, value = self.attention(self.norm_1(x), past_key, past_value, training=training)
        x = x + self.dropout(y, training=training)
        # GELU's tanh approximation, as in GPT-2 (the exact form lowers to Erfc, which tf2onnx lacks).
        h = keras.activations.gelu(self.mlp_in(self.norm_2(x)), approximate=True)
        x = x + self.dropout(self.mlp_out(h), training=training)
        return x, key, value

    def get_config(self):
        config = super().get_config()
        config.update(d_model=self.d_model, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
                      dropout=self.dropout_rate)
        return config


@keras.saving.register_keras_serializable(package="zoo")
class Transformer(text.CharModel):
    """`call(tokens, state=None, position_ids=None)` -> `(logits, next_state)`.

    `state` is the cache `[key_0, value_0, key_1, value_1, ...]`, each `[B, heads, P, head_dim]`
    (None: empty); positions default to P, P+1, ... .
    """

    def __init__(self, vocabulary, num_layers=4, d_model=128, num_heads=4, mlp_ratio=4, dropout=0.1,
                 max_context=320, **kwargs):
        super().__init__(vocabulary=vocabulary, **kwargs)
        self.num_layers, self.d_model, self.num_heads = num_layers, d_model, num_heads
        self.mlp_ratio, self.dropout_rate, self.max_context = mlp_ratio, dropout, max_context
        self.head_dim = d_model // num_heads
        self.token_embedding = keras.layers.Embedding(self.vocab_size, d_model, name="token_embedding")
        self.position_embedding = keras.layers.Embedding(max_context, d_model, name="position_embedding")
        self.dropout = Dropout(dropout)
        self.blocks = [DecoderBlock(d_model, num_heads, mlp_ratio, dropout, name=f"block_{i}")
                       for i in range(num_layers)]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")
        self.head = keras.layers.Dense(self.vocab_size, name="logits")

    def build(self, input_shape=(None, None)):
        self.token_embedding.build(input_shape)
        self.position_embedding.build(input_shape)
        for layer in (*self.blocks, self.final_norm, self.head):
            layer.build((None, None, self.d_model))
        self.built = True

    def empty_cache(self, batch):
        return [tf.zeros([batch, self.num_heads, 0, self.head_dim])] * (2 * self.num_layers)

    def call(self, tokens, state=None, position_ids=None, training=False):
        if state is None:
            state = self.empty_cache(ops.shape(tokens)[0])
        if position_ids is None:
            position_ids = ops.arange(ops.shape(tokens)[1])[None, :] + ops.shape(state[0])[2]
        x = self.token_embedding(tokens) + self.position_embedding(position_ids)
        x = self.dropout(x, training=training)
        next_state = []
        for i, block in enumerate(self.blocks):
            x, key, value = block(x, state[2 * i], state[2 * i + 1], training=training)
            next_state += [key, value]
        return self.head(self.final_norm(x)), next_state

    def get_config(self):
        config = super().get_config()
        config.update(num_layers=self.num_layers, d_model=self.d_model, num_heads=self.num_heads,
                      mlp_ratio=self.mlp_ratio, dropout=self.dropout_rate, max_context=self.max_context)
        return config


def load_data(cfg, data_dir=None):
    return text.load_data(cfg, data_dir)


def build_model(cfg, data):
    model = Transformer(data.vocabulary, num_layers=cfg.num_layers, d_model=cfg.d_model,
                        num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout,
                        max_context=cfg.max_context)
    model.build((None, None))
    total = cfg.epochs * data.steps_per_epoch
    warmup = min(cfg.warmup_steps, total // 2)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, total - warmup), alpha=0.1, warmup_target=cfg.learning_rate, warmup_steps=warmup,
    )
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay, beta_2=0.99,
                                       clipnorm=cfg.clipnorm)
    # Decay the matrices only, as nanoGPT does: not biases, LayerNorm scales or embeddings.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "embeddings"])
    model.compile(optimizer=optimizer)
    return model


def windowed_scores(ids: np.ndarray, window: int, batch: int, losses) -> dict:
    """Mean next-character loss over `ids` with windows of `window` characters sliding by half.

    Each window scores only its second half (the first window scores all), so every character is
    predicted from at least `window // 2` characters of context, and never from beyond the window.
    `losses(x [B, window], y [B, window])` -> [B, window] nats of each target.
    """
    stride = window // 2
    starts = list(range(0, max(1, len(ids) - window), stride))
    if starts[-1] + window < len(ids) - 1:
        starts.append(len(ids) - 1 - window)
    total, count, scored_to = 0.0, 0, 0  # scored_to: characters 1..scored_to already scored
    for b in range(0, len(starts), batch):
        chunk = starts[b : b + batch]
        x = np.stack([ids[s : s + window] for s in chunk])
        y = np.stack([ids[s + 1 : s + window + 1] for s in chunk])
        for row, s in zip(np.asarray(losses(x, y), np.float64), chunk):
            first_new = max(scored_to, s) - s  # targets ids[s+1+j] already scored for j < first_new
            total += row[first_new:].sum()
            count += window - first_new
            scored_to = s + window
    nats = total / count
    return {"nats_per_char": nats, "bits_per_char": nats / math.log(2), "chars_scored": count}


def windowed_nll(model, ids: np.ndarray, window: int, batch: int = 16) -> dict:
    """`windowed_scores` of the Keras model."""

    @tf.function(reduce_retracing=True)
    def nll(x, y):
        logits, _ = model(x, training=False)
        return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)

    return windowed_scores(ids, window, batch, lambda x, y: nll(x, y).numpy())


def windowed_nll_onnx(session, ids: np.ndarray, info: dict, batch: int = 16) -> dict:
    """`windowed_scores` of an exported decoder graph in ONNX Runtime (each window in one call, from
    zeroed caches of its length): the same windows as the Keras figure, so fp32 and int8 files are
    scored alike."""
    window = info["max_context"]
    past = cache_names(info)

    def losses(x, y):
        feed = {"input_ids": x.astype(np.int64), "position_ids": np.tile(np.arange(x.shape[1], dtype=np.int64),
                                                                         (len(x), 1))}
        feed.update({p: np.zeros((len(x), info["num_heads"], x.shape[1], info["head_dim"]), np.float32) for p in past})
        return text.token_nll(session.run(["logits"], feed)[0], y)

    return windowed_scores(ids, window, batch, losses)


EVAL_NOTE = (
    "Test loss: the TFDS test split in windows of max_context characters sliding by half, each "
    "character scored once with at least max_context/2 characters of context (windowed_nll)."
)


def evaluate(model, cfg, data_dir=None) -> dict:
    test_ids = zdata.encode(zdata.load_text(cfg.dataset, "test", data_dir), model.vocabulary)
    return {f"test_{k}": v for k, v in windowed_nll(model, test_ids, model.max_context).items()}


def export_graphs(model):
    """One decoder graph for prefill and decode, in the ONNX Runtime GenAI / Hugging Face Optimum
    naming: input_ids, position_ids, past_key_values.<i>.key/.value -> logits,
    present.<i>.key/.value; each cache [batch, heads, capacity, head_dim] of fixed capacity, the
    present the past with the new positions' keys and values written at `position_ids`
    (transformer_decoder, below): bound to one buffer, it is updated in place. The SavedModel
    signature keeps the same contract, taking the first row's position as every row's; its presents
    hold zeros after the new positions, as the ONNX graph's do when not bound to the past's buffer."""
    from zoo.export import Graph

    n, h, d = model.num_layers, model.num_heads, model.head_dim
    past_names = [f"past_key_values.{i}.{kind}" for i in range(n) for kind in ("key", "value")]
    signature = [tf.TensorSpec([None, None], tf.int64, name="input_ids"),
                 tf.TensorSpec([None, None], tf.int64, name="position_ids")]
    signature += [tf.TensorSpec([None, h, None, d], tf.float32, name=name) for name in past_names]

    def decoder(input_ids, position_ids, *past):
        start, new = position_ids[0, 0], tf.shape(input_ids, out_type=tf.int64)[1]
        logits, grown = model(input_ids, [p[:, :, :start] for p in past], position_ids=position_ids, training=False)
        outputs = {"logits": logits}
        for name, p, g in zip(past_names, past, grown):  # the capacity's later positions cleared
            outputs[name.replace("past_key_values", "present")] = tf.concat([g, tf.zeros_like(p[:, :, start + new:])],
                                                                             axis=2)
        return outputs

    def example(rng, later=None):  # later positions random too (the graph must not read them), or `later`
        batch, past, new = int(rng.integers(1, 4)), int(rng.integers(0, 6)), int(rng.integers(1, 5))
        if batch > 1 and past > 0:  # several new positions after cached ones: one sequence only (ONNX Runtime's
            new = 1                 # GroupQueryAttention)
        capacity = past + new + int(rng.integers(0, 4))
        inputs = {"input_ids": rng.integers(0, model.vocab_size, (batch, new)).astype(np.int64),
                  "position_ids": np.tile(np.arange(past, past + new, dtype=np.int64), (batch, 1))}
        for name in past_names:
            inputs[name] = rng.standard_normal((batch, h, capacity, d)).astype(np.float32)
            if later is not None:
                inputs[name][:, :, past + new :] = later
        return inputs

    axes = {"input_ids": ["batch", "sequence"], "position_ids": ["batch", "sequence"],
            "logits": ["batch", "sequence", model.vocab_size]}
    for name in past_names:
        axes[name] = axes[name.replace("past_key_values", "present")] = ["batch", h, "capacity", d]
    # Written in ONNX from the weights (zoo/onnx_build.py): tf2onnx's conversion has ~13 nodes per
    # LayerNormalization that no ONNX Runtime fusion recognises and ~130 shape nodes from the einsums.
    graph = Graph(name="decoder", fn=decoder, input_signature=signature, axes=axes, example=example,
                  ranges={"input_ids": (0, model.vocab_size), "position_ids": (0, model.max_context)},
                  build=lambda opset: transformer_decoder(model, opset))
    # Its attention is ONNX Runtime's GroupQueryAttention; `decoder.standard.onnx` is ONNX's Attention over
    # the whole capacity through a mask instead, for other runtimes. That graph's presents keep the past's
    # later positions (the signature's clear them): it is checked on caches whose later positions are zeros.
    graph.standard = dataclasses.replace(
        graph, build=lambda opset: transformer_decoder(model, opset, attention="standard"),
        example=functools.partial(example, later=0.0))
    return [graph]


STANDARD_NOTE = (
    "`decoder.standard.onnx` has the same inputs and outputs; its contract differs in three ways. Its "
    "presents keep the past's positions after the new ones (with past and present bound to one buffer, as "
    "zoo.runtime and GenAI run the decoder, that changes nothing). Those positions must hold finite values "
    "(zeros at first), since its attention reads the whole capacity through a mask. And several sequences "
    "may add several positions after cached ones in one call. In ONNX Runtime it is slower a step than "
    "`decoder.onnx` (benchmarks/README.md: Lean graphs and int8 variants)."
)


# int8 variant of the decoder (`decoder.int8.onnx`): onnxruntime's dynamic quantisation of its MatMuls
# (q/k/v, attention output, MLP, logits; int8 weights, activations quantised per call). zoo.runtime
# runs it on request (`--precision int8`); ONNX Runtime GenAI's config names the fp32 graph. Weights
# 7-bit, so that no x86-64 CPU's u8s8 kernels saturate (without VNNI, full 8-bit weights can) and
# every CPU keeps those fast kernels (benchmarks/int8-choices.md).
INT8_GRAPHS = {"decoder": {"op_types": ("MatMul",), "reduce_range": True}}


def variant_metrics(folder, graph: str, files: dict, info: dict, config: dict) -> dict:
    """`text.variant_test_nats` of the decoder, scored by `windowed_nll_onnx`."""
    return text.variant_test_nats(folder, files, info, config,
                                  lambda session, ids: windowed_nll_onnx(session, ids, info)["nats_per_char"])


def runtime_info(model) -> dict:
    return {
        "kind": "text-cached",
        "graph": "decoder",
        "vocabulary": model.vocabulary,
        "max_context": model.max_context,
        "num_layers": model.num_layers,
        "num_heads": model.num_heads,
        "head_dim": model.head_dim,
        "past": "past_key_values.{i}.{kind}",
        "present": "present.{i}.{kind}",
        # past and present: one buffer of `capacity` (>= the last position + 1) positions per tensor,
        # zeros at first; a call writes its new positions' keys and values at position_ids
        "cache": "in-place",
        "graphs_note": "one graph: prefill from position 0, then one token at a time, past and present bound "
                       "to the same buffers",
        "sample_defaults": text.sample_defaults(model.vocabulary),
    }


def card_sample(folder, manifest) -> str:
    from zoo import genai

    return text.card_sample(folder, manifest) + "\n\n" + genai.card_section(manifest)


def export_files(model, folder, info) -> list:
    """ONNX Runtime GenAI's config and tokenizer beside decoder.onnx (zoo.genai): the export folder
    loads in `onnxruntime_genai.Model` as it is."""
    from zoo import genai

    return genai.write(folder, info, model.d_model)


# --- The decoder graph, written in ONNX from the weights (zoo.onnx_build's builder) ---------


def _layer_norm(b: GraphBuilder, x: str, layer, name: str) -> str:
    gamma = b.const(f"{name}.gamma", np.asarray(layer.gamma, np.float32))
    beta = b.const(f"{name}.beta", np.asarray(layer.beta, np.float32))
    return b.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=float(layer.epsilon))


def _dense(b: GraphBuilder, x: str, kernel, bias, name: str, output=1) -> str:
    y = b.op("MatMul", [x, b.const(f"{name}.kernel", np.asarray(kernel, np.float32))])
    return b.op("Add", [y, b.const(f"{name}.bias", np.asarray(bias, np.float32))], outputs=output)


DECODER_OPSET = 23  # Gelu's tanh form needs opset 20, ONNX's Attention (attention="standard") 23
CONTRIB = {"com.microsoft": 1}  # ONNX Runtime's GroupQueryAttention


def transformer_decoder(model, opset: int, attention: str = "group-query"):
    """The transformer's decoder graph (input_ids, position_ids, past_key_values.<i>.key/value ->
    logits, present.<i>.key/value) in standard ops of opset 23 (or `opset` if newer) and ONNX
    Runtime's `GroupQueryAttention` (`com.microsoft` opset 1), with a cache of fixed capacity.

    Each cache tensor is [batch, heads, capacity, head_dim], its present the same buffer's next
    state. A call's `position_ids` run on from the sequence's cached length p (p, p + 1, ...;
    `GroupQueryAttention` takes the length as seqlens_k, the last position, per sequence): the new
    keys and values go in at those positions, and each new position attends to cache positions
    0..itself only, however large the capacity (ONNX's `Attention` read all of it through a mask).
    A caller that binds past and present to one buffer (ONNX Runtime GenAI's
    `past_present_share_buffer`, `zoo.runtime`'s decoder) has it updated in place, the positions
    after the new ones left as they were; a call with separate buffers gets them as zeros (ONNX
    Runtime's kernel clears a present it does not share). Neither is ever read. ONNX Runtime
    refuses a call that adds several positions after cached ones for more than one sequence
    ("batch_size must be 1 when sequence_length > 1 and past context is given"): a prefill from
    position 0 takes any batch, later calls one position per sequence or one sequence.

    Per block: `LayerNormalization`, one q/k/v MatMul whose output (q, k, v, each heads x head_dim)
    is `GroupQueryAttention`'s packed input, the attention output's MatMul, and `Gelu` in the tanh
    form Keras's approximate GELU uses.

    attention="standard": the same graph in ONNX's standard ops only, for runtimes other than ONNX
    Runtime (the graph shipped before 2026-12-03): the q/k/v split into heads, the new keys and
    values written at `position_ids` by `ScatterElements` (in place when bound to one buffer,
    positions after them left as they were either way; any positions, any batch), and ONNX's
    `Attention` over the whole capacity through a mask made from `position_ids` (positions after
    the new ones must hold finite values). A step costs more the larger the capacity."""
    if attention not in ("group-query", "standard"):
        raise ValueError(f"attention must be 'group-query' or 'standard', got {attention!r}")
    b = GraphBuilder("transformer_decoder")
    h, d, c = model.num_heads, model.head_dim, model.d_model
    x = b.op("Add", [b.op("Gather", [b.const("token_embedding", np.asarray(model.token_embedding.embeddings, np.float32)),
                                      "input_ids"], axis=0),
                     b.op("Gather", [b.const("position_embedding",
                                             np.asarray(model.position_embedding.embeddings, np.float32)),
                                     "position_ids"], axis=0)])
    attend = (_group_query_attention if attention == "group-query" else _standard_attention)(b, h, d, c)
    for i, block in enumerate(model.blocks):
        att = block.attention
        dense = (att._query_dense, att._key_dense, att._value_dense)
        qkv = _dense(b, _layer_norm(b, x, block.norm_1, f"block_{i}.norm_1"),
                     np.concatenate([np.asarray(layer.kernel).reshape(c, -1) for layer in dense], axis=1),
                     np.concatenate([np.asarray(layer.bias).reshape(-1) for layer in dense]), f"block_{i}.qkv")
        y = attend(qkv, i)  # [batch, sequence, heads x head_dim]; the cache's present written
        x = b.op("Add", [x, _dense(b, y, np.asarray(att._output_dense.kernel).reshape(-1, c),
                                   att._output_dense.bias, f"block_{i}.attention_out")])
        m = _dense(b, _layer_norm(b, x, block.norm_2, f"block_{i}.norm_2"), block.mlp_in.kernel, block.mlp_in.bias,
                   f"block_{i}.mlp_in")
        x = b.op("Add", [x, _dense(b, b.op("Gelu", [m], approximate="tanh"), block.mlp_out.kernel,
                                   block.mlp_out.bias, f"block_{i}.mlp_out")])
    _dense(b, _layer_norm(b, x, model.final_norm, "final_norm"), model.head.kernel, model.head.bias, "head",
           output=["logits"])
    cache = ["batch", h, "capacity", d]
    names = [f"{{}}.{i}.{kind}" for i in range(model.num_layers) for kind in ("key", "value")]
    inputs = [("input_ids", np.int64, ["batch", "sequence"]), ("position_ids", np.int64, ["batch", "sequence"])]
    inputs += [(name.format("past_key_values"), np.float32, cache) for name in names]
    outputs = [("logits", np.float32, ["batch", "sequence", model.vocab_size])]
    outputs += [(name.format("present"), np.float32, cache) for name in names]
    return b.model(inputs, outputs, max(opset, DECODER_OPSET), CONTRIB if attention == "group-query" else None)


def _group_query_attention(b: GraphBuilder, h: int, d: int, c: int):
    from onnx import TensorProto

    # its lengths: seqlens_k [batch] int32, each sequence's total length - 1 (its last position),
    # and the batch's longest total length as a scalar
    last = b.op("Cast", [b.op("Gather", ["position_ids", b.const("last", np.int64(-1))], axis=1)],
                to=TensorProto.INT32)
    total = b.op("Add", [b.op("ReduceMax", [last], keepdims=0), b.const("one", np.int32(1))])

    def attend(qkv: str, i: int) -> str:  # its default scale 1/sqrt(head_dim) is Keras's too
        return b.op("GroupQueryAttention", [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value",
                                            last, total],
                    outputs=[f"block_{i}.attention", f"present.{i}.key", f"present.{i}.value"],
                    domain="com.microsoft", num_heads=h, kv_num_heads=h)[0]
    return attend


def _standard_attention(b: GraphBuilder, h: int, d: int, c: int):
    # Mask [batch, 1, sequence, capacity]: the new position p sees cache positions 0..p. Not
    # Attention's is_causal: the spec aligns its triangle to the top left, ignoring the cache, and
    # ONNX Runtime's CPU and CUDA kernels disagree on it (onnxruntime issue 29020).
    capacity = b.op("Gather", [b.op("Shape", ["past_key_values.0.key"]), b.const("i2s", np.int64(2))], axis=0)
    columns = b.op("Range", [b.const("i0s", np.int64(0)), capacity, b.const("step", np.int64(1))])
    rows = b.op("Unsqueeze", ["position_ids", b.const("axes_1_3", np.array([1, 3], np.int64))])
    mask = b.op("Where", [b.op("LessOrEqual", [columns, rows]), b.const("visible", np.float32(0.0)),
                          b.const("hidden", np.float32(-1e9))])
    to_heads = b.const("qkv_heads", np.array([0, 0, 3 * h, d], np.int64))
    split = b.const("heads_split", np.array([h, h, h], np.int64))
    merge = b.const("merge_heads", np.array([0, 0, c], np.int64))
    where = []  # where each new key and value goes: its position, along the cache's third axis

    def attend(qkv: str, i: int) -> str:
        # [batch, sequence, 3 x heads x head_dim] -> q, k, v each [batch, heads, sequence, head_dim]
        q, k, v = b.op("Split", [b.op("Transpose", [b.op("Reshape", [qkv, to_heads])], perm=[0, 2, 1, 3]), split],
                       outputs=3, axis=1)
        if not where:
            where.append(b.op("Expand", [rows, b.op("Shape", [k])]))
        key = b.op("ScatterElements", [f"past_key_values.{i}.key", where[0], k], outputs=[f"present.{i}.key"], axis=2)
        value = b.op("ScatterElements", [f"past_key_values.{i}.value", where[0], v], outputs=[f"present.{i}.value"],
                     axis=2)
        y = b.op("Attention", [q, key, value, mask], q_num_heads=h, kv_num_heads=h)  # Keras's scale by default
        return b.op("Reshape", [b.op("Transpose", [y], perm=[0, 2, 1, 3]), merge])
    return attend
