"""Each export's models in Ray Serve replicas, with dynamic batching (`python -m zoo.serve --replicas R`).

The KServe server stays the front end (its REST and gRPC routes, the zoo's completions); each export
is a Ray Serve application of R replicas, processes with their own ONNX Runtime sessions, and every
model of the server hands its requests to its export's application through a deployment handle
(`RemoteModel`, what `kserve.ray.RayModel` does for one model a deployment). On a Ray cluster of
several machines (KubeRay on Kubernetes) the same applications spread over its nodes.

A replica computes one call at a time, as a Triton model instance does. Requests for stateless graphs,
and gan's and vae's generation (one generator call each), go through Ray Serve's dynamic batcher
(`@serve.batch`): the calls that arrive while a replica is busy, up to `max_batch` of them and
`zoo.serve.batches.MAX_BATCH_ROWS` rows, run as one call of the graph (requests of the same graph and trailing shapes
together), and each request gets its own rows back. Rows never mix in these graphs, so a batched
answer is the request's own, up to float rounding of a larger matrix product.
"""

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from ray import serve

from zoo.serve.batches import run_together

MAX_ONGOING = 256  # requests a replica holds at once (running or queued), as Ray Serve counts them


@serve.deployment(max_ongoing_requests=MAX_ONGOING, health_check_period_s=2, health_check_timeout_s=30,
                  graceful_shutdown_timeout_s=20, ray_actor_options={"num_cpus": 0})
class ExportReplica:
    """One replica of one export: its graph models and its generation model, and its dynamic batcher."""

    def __init__(self, export_dir: str, threads: int, max_batch: int, batch_wait_s: float, max_call_bytes):
        for name in ("kserve", "kserve.trace", "ray", "ray.serve"):
            logging.getLogger(name).setLevel(logging.ERROR)
        from zoo.runtime.core import load
        from zoo.serve.completions import local_text
        from zoo.serve.models import export_models

        self.export = load(export_dir, verify=False, threads=threads, max_call_bytes=max_call_bytes)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zoo-replica")  # one call at a time
        batcher = (lambda graph, feed: self.batched((graph, feed))) if max_batch > 1 else None
        self.models = {m.name: m for m in export_models(self.export, self.pool, batcher)}
        self.characters = local_text(self.export, self.pool)
        for model in self.models.values():
            model.load()
        self.batched.set_max_batch_size(max_batch)
        self.batched.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def batched(self, items: list) -> list:
        return await asyncio.get_running_loop().run_in_executor(self.pool, run_together, self.export, items)

    async def infer(self, name: str, inputs: list) -> dict:
        """Model `name`'s outputs for `inputs` ([(name, datatype, array)], as `remote_model` sends them)."""
        from kserve import InferInput

        items = {n: InferInput(n, list(array.shape), datatype, data=array) for n, datatype, array in inputs}
        return await self.models[name].outputs(items)

    async def text(self, prompt: str, max_tokens: int, temperature: float, top_k: int, seed: int):
        """A completion's characters as they are sampled, as the one-process server makes them
        (zoo.serve.completions.local_text); a bad request raises at the first one. The caller closing the
        stream ends the generation."""
        async for c in self.characters(prompt, max_tokens, temperature, top_k, seed):
            yield c


def start(exports: dict, replicas: int, threads: int, max_batch: int, batch_wait_s: float, max_call_bytes) -> dict:
    """Starts a local Ray cluster (or joins the one $RAY_ADDRESS names) and each export's application:
    {model: DeploymentHandle}."""
    import ray

    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.ERROR, log_to_driver=False)
    else:  # a cluster of its own ("local": never a stale one from an earlier run's /tmp/ray)
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False, object_store_memory=128 << 20)  # requests and answers are small
    logging.getLogger("ray.serve").setLevel(logging.ERROR)  # its start-up lines: the server writes its own
    quiet_cluster_messages()
    serve.start(proxy_location="Disabled", logging_config={"log_level": "ERROR", "enable_access_log": False})
    handles = {}
    for name, export in exports.items():
        app = ExportReplica.options(name=f"{name}", num_replicas=replicas).bind(
            str(export.path.resolve()), threads, max_batch, batch_wait_s, max_call_bytes)
        handles[name] = serve.run(app, name=name, route_prefix=None)
    return handles


def quiet_cluster_messages():
    """The cluster's messages to the driver (a replica that died, say), which Ray prints to stdout over
    several lines, go to the server's log as one line each."""
    import ray._private.worker as worker

    log = logging.getLogger("zoo.serve")

    def one_line(data, ignore_prefix):
        for message in data.get("lines", []):
            log.warning("ray: %s", " ".join(str(message).split())[:500])

    worker.print_to_stdstream = one_line


def stop(timeout: float = 30):
    """Stops the applications (their replicas finish what they hold), then the local cluster; a Serve
    that cannot stop within `timeout` (its cluster's daemons gone, say) is left to ray.shutdown."""
    import ray

    stopping = threading.Thread(target=serve.shutdown, daemon=True)
    stopping.start()
    stopping.join(timeout)
    ray.shutdown()


class ReplicaFailed(RuntimeError):
    """A replica died, or failed otherwise, while computing a request: a 500 over REST, INTERNAL over gRPC
    (KServe's mapping of an error it does not know; its InferenceError would be a 400 over gRPC)."""


def remote_model(local, handle):
    """The front end's stand-in for model `local` (a zoo.serve.models model, for its name and metadata):
    requests go to the export's replicas through `handle`. A refusal there is the same 400 here; a replica
    that died while computing is a 500 saying so (Ray Serve starts another; later requests go to the live ones)."""
    from kserve import Model
    from kserve.errors import InvalidInput

    from zoo.serve.models import as_array, request_inputs, respond

    class RemoteModel(Model):
        def __init__(self):
            super().__init__(local.name)
            self.ready = True

        def load(self) -> bool:
            return self.ready

        def get_input_types(self) -> list:
            return local.get_input_types()

        def get_output_types(self) -> list:
            return local.get_output_types()

        async def predict(self, request, headers=None):
            # plain arrays cross to the replica (a gRPC request's protobuf parts do not pickle); the
            # response is made here, where the request is
            inputs = [(n, item.datatype, as_array(item)) for n, item in request_inputs(request).items()]
            try:
                outputs = await handle.infer.remote(local.name, inputs)
            except Exception as e:
                cause = getattr(e, "cause", None) or e  # Ray wraps a replica's exception
                if isinstance(cause, InvalidInput):
                    raise InvalidInput(cause.reason) from None
                first = (str(cause).strip().splitlines() or [""])[-1][:300]  # its last line says what happened
                raise ReplicaFailed(f"the replica computing this {local.name} request failed "
                                     f"({type(cause).__name__}: {first}); send it again") from None
            return respond(local.name, request, outputs)

    return RemoteModel()


def remote_text(handle):
    """A completion's characters from the export's replicas, streamed as they are sampled."""

    async def characters(*args):
        stream = handle.options(stream=True).text.remote(*args)
        try:
            async for c in stream:
                yield c
        finally:  # the client went away, or the text is done: the replica's generation ends
            stream.cancel()

    return characters
