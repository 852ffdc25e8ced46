"""`python -m zoo.serve [EXPORTS]`: the zoo's exports behind KServe's model server (make serve).

REST (Open Inference Protocol v2, and OpenAI-compatible completions) on --http-port, gRPC (the v2
protocol Triton speaks) on --grpc-port, both on 127.0.0.1 unless --host says otherwise.

- every graph as a v2 model named as in the Triton repository (`gan_generator`, `rnn_step`, ...);
- every export's whole sampling loop as a v2 model named as the model (`gan`, `transformer`, ...);
- `rnn`, `lstm`, `transformer` at /openai/v1/completions, streamed as server-sent events on request.

GET /v2/health/ready answers 200 once every model is loaded. SIGTERM (or Ctrl-C) stops taking new
connections, lets the requests in flight finish, and exits 0. One log line a request: transport,
model, status, milliseconds.
"""

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from zoo.registry import MODELS  # no TensorFlow: the registry imports model modules lazily

TEXT_KINDS = ("text-recurrent", "text-cached")
MAX_REQUEST_BYTES = 64 << 20  # a request body at most: a gan_generator batch of 64 is 16 KiB, a decoder cache 4 MiB

log = logging.getLogger("zoo.serve")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m zoo.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", nargs="?", default="exports", help="the folder holding <model>/manifest.json")
    parser.add_argument("--host", default="127.0.0.1", help="the address both servers listen on")
    parser.add_argument("--http-port", type=int, default=8080, help="REST: v2 and /openai/v1")
    parser.add_argument("--grpc-port", type=int, default=8081, help="gRPC: v2 (Triton's client speaks it)")
    parser.add_argument("--models", default=None, help="comma-separated models to serve (default: every export)")
    parser.add_argument("--replicas", type=int, default=0,
                        help="run each export's models in this many Ray Serve replicas (processes), with dynamic "
                             "batching; 0: in this process")
    parser.add_argument("--max-batch", type=int, default=64,
                        help="replicas: requests one batched call may join (1: no batching)")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0,
                        help="replicas: how long a batch waits for more requests once its first one is in")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of each ONNX Runtime session (default: one per core, shared "
                             "among the replicas of an export)")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1,
                        help="without replicas: requests computed at once (the runtime's thread pool); others "
                             "wait their turn (a replica computes one call at a time)")
    parser.add_argument("--max-request-bytes", type=int, default=MAX_REQUEST_BYTES,
                        help="a request body (REST) or message (gRPC) larger than this is refused")
    parser.add_argument("--max-call-bytes", type=int, default=None,
                        help="the runtime's limit on one graph call's memory (default: $ZOO_MAX_CALL_BYTES or 1 GiB)")
    parser.add_argument("--grace", type=float, default=30, help="seconds SIGTERM waits for requests in flight")
    parser.add_argument("--no-verify", action="store_true", help="skip the exports' sha256 checks at start")
    args = parser.parse_args(argv)
    for name in ("http_port", "grpc_port"):
        if not 0 <= getattr(args, name) < 65536:
            parser.error(f"--{name.replace('_', '-')} must be a port number from 0 to 65535")
    for name, least in (("threads", 0), ("concurrency", 1), ("max_request_bytes", 1), ("replicas", 0),
                        ("max_batch", 1), ("batch_wait_ms", 0)):
        value = getattr(args, name)
        if value is not None and not value >= least:
            parser.error(f"--{name.replace('_', '-')} must be >= {least}")
    if args.threads is None:  # the cores shared among an export's replicas
        args.threads = max(1, (os.cpu_count() or 1) // args.replicas) if args.replicas else 0
    return args


def load_exports(args) -> dict:
    """{model: Export} for the models asked for (every export found by default); a one-line error else."""
    from zoo.runtime.core import load

    root = Path(args.exports)
    found = [m for m in MODELS if (root / m / "manifest.json").is_file()]
    wanted = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else found
    unknown = [m for m in wanted if m not in MODELS]
    if unknown:
        raise SystemExit(f"error: no model {unknown[0]!r}; models: {', '.join(MODELS)}")
    missing = [m for m in wanted if m not in found]
    if missing or not wanted:
        raise SystemExit(f"error: no export for {', '.join(missing) or 'any model'} in {root}/ (make train-<model>)")
    return {m: load(root / m, verify=not args.no_verify, max_call_bytes=args.max_call_bytes, threads=args.threads)
            for m in wanted}


def build_models(args, exports: dict, pool) -> tuple:
    """The server's models, and the completions' sources of characters: computed here, or by each
    export's Ray Serve replicas."""
    from zoo.serve.completions import local_text
    from zoo.serve.models import export_models

    texts = [name for name, export in exports.items() if export.runtime["kind"] in TEXT_KINDS]
    if not args.replicas:
        models = [m for export in exports.values() for m in export_models(export, pool)]
        for model in models:
            model.load()
        return models, {name: local_text(exports[name], pool) for name in texts}
    try:
        from zoo.serve import replicas
    except ImportError as e:
        raise SystemExit(f'error: --replicas needs Ray Serve ({e}): pip install ".[serve]"') from None

    handles = replicas.start(exports, args.replicas, args.threads, args.max_batch, args.batch_wait_ms / 1000,
                             args.max_call_bytes)
    models = [replicas.remote_model(m, handles[name]) for name, export in exports.items()
              for m in export_models(export, None)]
    return models, {name: replicas.remote_text(handles[name]) for name in texts}


class RequestLog:
    """ASGI middleware: the one log line of each REST request (written when its response ends, so a
    stream's line has its whole time and a client that went away says so), and the request size limit."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, state = time.perf_counter(), {"status": None, "done": False, "received": 0}
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            return await self._refuse(scope, send, start, length)

        async def counted_receive():
            message = await receive()
            state["received"] += len(message.get("body", b""))
            if state["received"] > self.max_bytes:  # a chunked body that grows past the limit: read no more
                return {"type": "http.disconnect"}
            return message

        async def logged_send(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["done"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, logged_send)
        finally:
            status = state["status"] if state["done"] else f"{state['status'] or '-'} (client went away)"
            log.info("rest %s %s %s %.1f ms", scope.get("method"), scope.get("path"), status,
                     1000 * (time.perf_counter() - start))

    async def _refuse(self, scope, send, start, length):
        body = (f'{{"error": "the request body ({length.decode(errors="replace")} bytes) is over this server\'s '
                f'limit of {self.max_bytes} bytes (--max-request-bytes)"}}').encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        log.info("rest %s %s 413 %.1f ms", scope.get("method"), scope.get("path"), 1000 * (time.perf_counter() - start))


def grpc_log_interceptor():
    """The one log line of each gRPC call: method, model, status code, milliseconds."""
    import grpc
    from grpc import aio

    class LogInterceptor(aio.ServerInterceptor):
        async def intercept_service(self, continuation, details):
            handler = await continuation(details)
            if handler is None or handler.unary_unary is None:
                return handler
            inner, method = handler.unary_unary, details.method.rsplit("/", 1)[-1]

            async def behavior(request, context):
                start, code = time.perf_counter(), "OK"
                try:
                    return await inner(request, context)
                except BaseException:
                    code = context.code().name if context.code() is not None else "UNKNOWN"
                    raise
                finally:
                    model = getattr(request, "model_name", "") or getattr(request, "name", "")
                    log.info("grpc %s %s %s %.1f ms", method, model, code, 1000 * (time.perf_counter() - start))

            return grpc.unary_unary_rpc_method_handler(behavior, request_deserializer=handler.request_deserializer,
                                                       response_serializer=handler.response_serializer)

    return LogInterceptor()


async def serve(args, exports: dict, models: list, sources: dict):
    from grpc import aio
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
    from kserve.protocol.grpc.servicer import InferenceServicer
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer

    from zoo.serve.completions import add_routes

    repository = ModelRepository()
    for model in models:
        repository.update(model)
    dataplane, extension = DataPlane(model_registry=repository), ModelRepositoryExtension(model_registry=repository)

    # REST: KServe's own server and routes; uvicorn listens on --host (KServe's RESTServer says 0.0.0.0)
    rest = RESTServer("kserve.model_server:app", dataplane, extension, args.http_port,
                      grace_period=int(args.grace), event_loop="asyncio")
    rest.config.host = args.host
    rest.create_application()
    from kserve.model_server import app

    add_routes(app, {n: exports[n] for n in sources}, sources)
    app.add_middleware(RequestLog, max_bytes=args.max_request_bytes)

    # gRPC: KServe's servicer and error mapping on --host (KServe's GRPCServer listens on [::])
    limit = args.max_request_bytes
    grpc_server = aio.server(ThreadPoolExecutor(max_workers=4),
                             interceptors=(grpc_log_interceptor(), ExceptionToStatusInterceptor()),
                             options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", max(limit, 256 << 20))])
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dataplane, extension),
                                                                       grpc_server)
    if grpc_server.add_insecure_port(f"{args.host}:{args.grpc_port}") == 0:
        raise SystemExit(f"error: cannot listen on {args.host}:{args.grpc_port} (gRPC): in use?")
    await grpc_server.start()

    async def announce():
        while not rest._server.started and not rest._server.should_exit:
            await asyncio.sleep(0.05)
        if rest._server.started:
            names = ", ".join(m.name for m in models)
            where = f"{args.replicas} Ray Serve replicas an export" if args.replicas else "this process"
            log.info("zoo.serve: %d models on http://%s:%d (REST, /openai/v1) and %s:%d (gRPC), computed in %s: %s",
                     len(models), args.host, args.http_port, args.host, args.grpc_port, where, names)

    announcer = asyncio.create_task(announce())
    try:
        await rest._server.serve()  # returns after SIGTERM/SIGINT, once the requests in flight are answered
    finally:
        announcer.cancel()
        await grpc_server.stop(grace=args.grace)
    if not rest._server.started:
        raise SystemExit(f"error: cannot listen on {args.host}:{args.http_port} (REST): in use?")


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # one line a request, written here
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")  # KServe's, a line a request
    saved, sys.argv = sys.argv, sys.argv[:1]  # kserve.model_server parses the command line when imported
    try:
        import kserve  # noqa: F401
    finally:
        sys.argv = saved
    try:
        exports = load_exports(args)
    except Exception as e:  # a missing, corrupt or foreign export
        print(f"error: {e}", file=sys.stderr)
        return 1
    pool = ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="zoo-runtime")
    models, sources = build_models(args, exports, pool)
    # uvicorn re-raises the signal that stopped it once it has drained: by then the server has exited cleanly
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        asyncio.run(serve(args, exports, models, sources))
    finally:
        if args.replicas:
            from zoo.serve import replicas

            replicas.stop()
        pool.shutdown(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
