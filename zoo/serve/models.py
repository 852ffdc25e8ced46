"""The zoo's exports as KServe models: every graph (`gan_generator`, ...) and every export's whole
sampling loop (`gan`, `transformer`, ...), each a `kserve.Model` speaking the Open Inference Protocol v2.

Both run the zoo's runtime (numpy + onnxruntime) in a thread pool, so that the server's event loop
keeps answering while a model computes. A request the runtime refuses (a wrong name, dtype or shape,
an id out of range, a size over the limits) is KServe's `InvalidInput`: a 400 over REST and
INVALID_ARGUMENT over gRPC, with the runtime's one-line reason.
"""

import asyncio

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput

from zoo.runtime.core import Export
from zoo.triton import DATA_TYPES, served_file, state_pairs

# numpy dtype -> the v2 protocol's datatype: Triton's config type without its prefix (TYPE_FP32 -> FP32)
V2_TYPES = {dtype: name.removeprefix("TYPE_") for dtype, name in DATA_TYPES.items()}


def v2_shape(spec: dict) -> list:
    """A manifest shape in the v2 (and Triton) form: -1 for a named axis; a graph input or output of one
    value per row ([batch]) is [batch, 1], as Triton's repository declares it (dims [1], reshape [])."""
    shape = [d if isinstance(d, int) else -1 for d in spec["shape"]]
    return shape + [1] if len(shape) == 1 else shape


def tensor_info(spec: dict) -> dict:
    return {"name": spec["name"], "datatype": V2_TYPES[spec["dtype"]], "shape": v2_shape(spec)}


def as_array(item, datatype: str = None) -> np.ndarray:
    """A request's input as numpy, or InvalidInput naming it (data that does not fill its shape,
    values that are not numbers, a datatype other than `datatype`)."""
    if datatype and item.datatype != datatype:
        raise InvalidInput(f"input {item.name!r} must have datatype {datatype}, got {item.datatype}")
    try:
        return item.as_numpy()
    except InvalidInput:
        raise
    except Exception as e:  # numpy's ValueError/TypeError on data that does not match shape or datatype
        raise InvalidInput(f"input {item.name!r} ({item.datatype} {list(item.shape)}): {str(e).splitlines()[0]}") from None


def output(name: str, array: np.ndarray, binary: bool) -> InferOutput:
    """An output in JSON, or `binary`: raw bytes (gRPC's raw contents, which Triton's client reads; REST's
    binary extension where the request asks for it)."""
    array = np.ascontiguousarray(array)
    out = InferOutput(name, list(array.shape), "BYTES" if array.dtype == object else V2_TYPES[array.dtype.name])
    out.set_data_from_numpy(array, binary_data=binary)
    return out


def request_inputs(request: InferRequest) -> dict:
    inputs = {item.name: item for item in request.inputs}
    if len(inputs) != len(request.inputs):
        raise InvalidInput(f"an input is named twice in {[i.name for i in request.inputs]}")
    return inputs


def respond(name: str, request: InferRequest, outputs: dict) -> InferResponse:
    """The v2 response to `request` holding `outputs` (those it asked for, else all), in JSON, or binary
    where it asked for that (REST's binary extension) or came over gRPC (raw contents, which Triton's
    client reads)."""
    wanted = [o.name for o in request.request_outputs or []]
    unknown = sorted(set(wanted) - set(outputs))
    if unknown:
        raise InvalidInput(f"model {name!r} has no output {unknown[0]!r}; outputs: {', '.join(outputs)}")
    binary = bool(request.from_grpc or request.use_binary_outputs)
    return InferResponse(response_id=request.id or "", model_name=name,
                         infer_outputs=[output(n, outputs[n], binary) for n in wanted or outputs],
                         use_binary_outputs=request.use_binary_outputs,
                         requested_outputs=request.request_outputs or None)


class ZooModel(Model):
    """What both kinds share: the export, the pool the runtime runs in, and the batcher.

    A model whose work is one call of a stateless graph (`batch_graph`) splits it in three: `prepare`
    (the request's checks, and the graph's inputs), the call, and `finish` (the outputs). In a Ray Serve
    replica `batcher` is the replica's dynamic batcher, which runs the calls of requests that arrive
    together as one (zoo.serve.replicas); otherwise, and for every other model, `compute` does the whole
    request in the pool."""

    batch_graph = None  # the graph whose calls rows of several requests may share (None: none)

    def __init__(self, name: str, export: Export, pool, batcher=None):
        super().__init__(name)
        self.export, self.pool, self.batcher = export, pool, batcher

    def load(self) -> bool:
        self.ready = True
        return self.ready

    async def predict(self, request: InferRequest, headers=None) -> InferResponse:
        return respond(self.name, request, await self.outputs(request_inputs(request)))

    async def outputs(self, inputs: dict) -> dict:
        """The runtime's answer to `inputs` ({name: InferInput}): {output name: array}, or InvalidInput."""
        try:
            if self.batcher is not None and self.batch_graph is not None:
                feed, context = self.prepare(inputs)
                return self.finish(await self.batcher(self.batch_graph, feed), context)
            return await asyncio.get_running_loop().run_in_executor(self.pool, self.compute, inputs)
        except (ValueError, KeyError, TypeError) as e:  # the runtime's refusals
            raise InvalidInput(str(e).strip("'\"").splitlines()[0]) from None

    def compute(self, inputs: dict) -> dict:
        raise NotImplementedError

    def prepare(self, inputs: dict) -> tuple:
        raise NotImplementedError

    def finish(self, result: dict, context) -> dict:
        raise NotImplementedError


class GraphModel(ZooModel):
    """One exported graph under its Triton repository name (`<model>_<graph>`), with the inputs and outputs
    Triton's config gives it: the same names and dtypes, one-value-per-row tensors as [batch, 1] ([batch]
    is taken too). A recurrent step graph's state is an input and an output like any other (`state` in,
    `next_state` out): the client keeps it, where Triton's sequence batcher would."""

    def __init__(self, name: str, export: Export, graph: str, pool, batcher=None):
        super().__init__(name, export, pool, batcher)
        self.graph = graph
        spec = export.graph(graph)
        self.input_specs, self.output_specs = spec["inputs"], spec["outputs"]
        # the file Triton's repository serves: a graph with contrib ops runs as its standard-ops variant
        self.precision = "standard" if served_file(spec) != spec["onnx"] else "fp32"
        # as in Triton: stateless graphs are batched; recurrent steps and the cached decoder are not
        stateful = state_pairs(spec) or export.runtime.get("kind") == "text-cached"
        self.batch_graph = None if stateful else graph

    def load(self) -> bool:
        self.export.session(self.graph, precision=self.precision)  # fail at start, not at the first request
        return super().load()

    def get_input_types(self) -> list:
        return [tensor_info(s) for s in self.input_specs]

    def get_output_types(self) -> list:
        return [tensor_info(s) for s in self.output_specs]

    def prepare(self, inputs: dict) -> tuple:
        names = [s["name"] for s in self.input_specs]
        missing, extra = sorted(set(names) - set(inputs)), sorted(set(inputs) - set(names))
        if missing or extra:
            raise InvalidInput(f"model {self.name!r} takes inputs {names}; missing {missing}, unexpected {extra}")
        feed = {}
        for spec in self.input_specs:
            array = as_array(inputs[spec["name"]], V2_TYPES[spec["dtype"]])
            if len(spec["shape"]) == 1 and array.ndim == 2 and array.shape[1] == 1:
                array = array[:, 0]  # Triton's [batch, 1] for a graph's [batch]
            feed[spec["name"]] = array
        self.export.check_inputs(self.graph, feed, self.precision)
        return feed, None

    def compute(self, inputs: dict) -> dict:
        feed, context = self.prepare(inputs)
        return self.finish(self.export.run(self.graph, feed, check=False, precision=self.precision), context)

    def finish(self, result: dict, context) -> dict:
        return {s["name"]: result[s["name"]].reshape(-1, 1) if len(s["shape"]) == 1 else result[s["name"]]
                for s in self.output_specs}


# The options a generation model takes, by the export's kind: name -> v2 datatype family (their meanings:
# the runtime's samplers, docs/serving.md). Every option is optional (the manifest's sample_defaults fill
# it) and holds one value, except the class lists (labels, digits), which hold one value per class asked for.
IMAGE_OPTIONS = {"labels": "INT", "per_label": "INT", "seed": "INT"}
DIFFUSION_OPTIONS = {"sampler": "BYTES", "steps": "INT", "eta": "FP", "guidance": "FP"}
AUDIO_OPTIONS = {"digits": "INT", "seconds": "FP", "temperature": "FP", "mel_temperature": "FP", "seed": "INT"}
TEXT_OPTIONS = {"prompt": "BYTES", "length": "INT", "temperature": "FP", "top_k": "INT", "seed": "INT", "batch": "INT"}
LISTS = ("labels", "digits")


def options_for(kind: str) -> dict:
    if kind == "image-diffusion":
        return {**IMAGE_OPTIONS, **DIFFUSION_OPTIONS}
    if kind in ("image-generator", "image-autoregressive"):
        return IMAGE_OPTIONS
    if kind == "audio-generator":
        return AUDIO_OPTIONS
    return TEXT_OPTIONS


def option(item, family: str, is_list: bool):
    """One request option as a Python value (a list for the class lists), or InvalidInput naming it."""
    allowed = {"INT": ("INT", "UINT"), "FP": ("FP", "INT", "UINT"), "BYTES": ("BYTES",)}[family]
    if not item.datatype.startswith(allowed):
        raise InvalidInput(f"input {item.name!r} must have a datatype {' or '.join(a + '*' for a in allowed)}, "
                           f"got {item.datatype}")
    array = as_array(item).reshape(-1)
    if is_list:
        return [int(v) for v in array]
    if array.size != 1:
        raise InvalidInput(f"input {item.name!r} holds one value, got {array.size}")
    value = array[0]
    if family == "BYTES":
        try:
            return value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise InvalidInput(f"input {item.name!r} is not UTF-8 text") from None
    return float(value) if family == "FP" else int(value)


class GenerateModel(ZooModel):
    """An export's whole sampling loop, named as the model: the options in (see `options_for`; the
    manifest's sample_defaults for those left out), and out `images` (uint8 [labels, per_label, H, W])
    with `labels`, `audio` (float32 [clips, samples], zero after each clip's `lengths`) with
    `lengths` and `sample_rate`, or `text` (BYTES [batch], the prompt included). The same seed gives
    what `zoo.runtime` gives."""

    def __init__(self, name: str, export: Export, pool, batcher=None):
        super().__init__(name, export, pool, batcher)
        self.kind = export.runtime["kind"]
        self.options = options_for(self.kind)
        self.defaults = export.runtime.get("sample_defaults", {})
        # an image generator's request is one call of its generator: several requests' calls batch together
        self.batch_graph = export.runtime["graph"] if self.kind == "image-generator" else None

    def get_input_types(self) -> list:
        return [{"name": k, "datatype": {"INT": "INT64", "FP": "FP32", "BYTES": "BYTES"}[family],
                 "shape": [-1] if k in LISTS else [1]} for k, family in self.options.items()]

    def get_output_types(self) -> list:
        if self.kind == "audio-generator":
            return [{"name": "audio", "datatype": "FP32", "shape": [-1, -1]},
                    {"name": "lengths", "datatype": "INT32", "shape": [-1]},
                    {"name": "sample_rate", "datatype": "INT32", "shape": [1]}]
        if self.kind.startswith("text"):
            return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        return [{"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, -1]},
                {"name": "labels", "datatype": "INT32", "shape": [-1]}]

    def read(self, inputs: dict) -> dict:
        extra = sorted(set(inputs) - set(self.options))
        if extra:
            raise InvalidInput(f"model {self.name!r} has no input {extra[0]!r}; inputs: {', '.join(self.options)}")
        return {k: option(item, self.options[k], k in LISTS) for k, item in inputs.items()}

    def opts(self, inputs: dict) -> dict:
        got = self.read(inputs)
        return {k: got.get(k, self.defaults.get(k)) for k in self.options}

    def prepare(self, inputs: dict) -> tuple:
        """An image generator's request: the generator's inputs, as zoo.runtime.images.sample_images makes them."""
        from zoo.runtime.images import check_request, generator_feed

        opts = self.opts(inputs)
        labels, per_label, seed = check_request(self.export, opts["labels"], opts["per_label"], opts["seed"])
        feed = generator_feed(self.export, np.repeat(labels, per_label), np.random.default_rng(seed))
        return feed, (labels, per_label)

    def finish(self, result: dict, context) -> dict:
        from zoo.runtime.images import to_uint8

        labels, per_label = context
        return {"images": to_uint8(self.export, result[self.export.runtime["output"]], per_label),
                "labels": np.asarray(labels, np.int32)}

    def compute(self, inputs: dict) -> dict:
        if self.batch_graph is not None:
            feed, context = self.prepare(inputs)
            return self.finish(self.export.run(self.batch_graph, feed, check=False), context)
        opts = self.opts(inputs)
        if self.kind.startswith("text"):
            from zoo.runtime.text import sample_text

            texts = sample_text(self.export, opts["prompt"], opts["length"], opts["temperature"], opts["top_k"],
                                opts["seed"], 1 if opts["batch"] is None else opts["batch"], on_full="slide")
            return {"text": np.array([t.encode() for t in texts], dtype=object)}
        if self.kind == "audio-generator":
            from zoo.runtime.audio import generate

            clips = generate(self.export, opts["digits"], opts["seconds"], opts["temperature"],
                             opts["mel_temperature"], opts["seed"])
            audio = np.zeros((len(clips), max(len(c) for c in clips)), np.float32)
            for row, clip in zip(audio, clips):
                row[: len(clip)] = clip
            return {"audio": audio, "lengths": np.array([len(c) for c in clips], np.int32),
                    "sample_rate": np.array([self.export.runtime["sample_rate"]], np.int32)}
        from zoo.runtime.images import sample_images

        sampler = {k: opts[k] for k in DIFFUSION_OPTIONS if k in self.options}
        images, labels = sample_images(self.export, opts["labels"], opts["per_label"], opts["seed"], **sampler)
        return {"images": images, "labels": np.asarray(labels, np.int32)}


def export_models(export: Export, pool, batcher=None) -> list:
    """An export's models: each graph (`<model>_<graph>`), then its generation (`<model>`)."""
    name = export.model
    return ([GraphModel(f"{name}_{graph}", export, graph, pool, batcher) for graph in export.manifest["graphs"]]
            + [GenerateModel(name, export, pool, batcher)])
