"""OpenAI-compatible completions for the text models, on the KServe server's own FastAPI app.

    POST /openai/v1/completions   {"model": "transformer", "prompt": "ROMEO:", "max_tokens": 200,
                                   "temperature": 0.8, "top_k": 0, "seed": 0, "stream": true}
    GET  /openai/v1/models

KServe 0.21 has OpenAI routes of its own (`kserve.protocol.rest.openai`), but they import vLLM's
request types, and vLLM needs PyTorch: these routes are the zoo's, beside KServe's v2 routes in the
same server, so that the official `openai` client works against it with no GPU stack installed.

A token is a character (the models' vocabulary). With `"stream": true` each character is sent as a
server-sent event as soon as the runtime has sampled it (`zoo.runtime.text.stream_text`, one step a
call in the server's thread pool); a client that goes away stops its generation at the next step and
its decoder returns to the runtime. The same request gives what `zoo.runtime.sample_text` gives.
"""

import asyncio
import json
import threading
import time
import uuid

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from zoo.runtime.core import check_count, check_number
from zoo.runtime.text import stream_text

FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_k", "seed", "stream", "n", "user"}
DEFAULT_MAX_TOKENS = 16  # OpenAI's default
DEFAULT_TEMPERATURE = 1.0  # OpenAI's default


class RequestError(ValueError):
    def __init__(self, message: str, param: str = None, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status


def error(e: RequestError) -> JSONResponse:
    kind = "invalid_request_error" if e.status == 400 else "not_found_error"
    return JSONResponse({"error": {"message": str(e), "type": kind, "param": e.param, "code": None}},
                        status_code=e.status)


def parse(body: bytes, exports: dict) -> dict:
    """A completions request's fields, checked: RequestError naming the field otherwise."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"the body is not JSON: {e}") from None
    if not isinstance(request, dict):
        raise RequestError("the body must be a JSON object")
    unknown = sorted(set(request) - FIELDS)
    if unknown:
        raise RequestError(f"unsupported field {unknown[0]!r}; this server takes {', '.join(sorted(FIELDS))}",
                           unknown[0])
    model = request.get("model")
    if model not in exports:
        raise RequestError(f"no text model {model!r}; models: {', '.join(exports)}", "model", 404)
    prompt = request.get("prompt", "")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise RequestError("prompt must be a non-empty string (or a list of one)", "prompt")
    if request.get("n", 1) != 1:
        raise RequestError("n must be 1: send one request per completion", "n")
    stream = request.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream must be true or false", "stream")
    fields = {"max_tokens": DEFAULT_MAX_TOKENS, "temperature": DEFAULT_TEMPERATURE, "top_k": 0, "seed": 0}
    fields = {k: default if request.get(k) is None else request[k] for k, default in fields.items()}
    try:
        values = {"max_tokens": check_count("max_tokens", fields["max_tokens"]),
                  "temperature": check_number("temperature", fields["temperature"], 0),
                  "top_k": check_count("top_k", fields["top_k"]), "seed": check_count("seed", fields["seed"])}
    except ValueError as e:
        raise RequestError(str(e), str(e).split()[0]) from None
    return {"model": model, "prompt": prompt, "stream": stream, **values}


def chunk(rid: str, created: int, model: str, text: str, finish=None) -> str:
    body = {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": text, "index": 0, "finish_reason": finish, "logprobs": None}]}
    return f"data: {json.dumps(body)}\n\n"


def local_text(export, pool):
    """A completion's characters from `export` in this process: each step a call in `pool`, so the event
    loop stays free while the runtime computes; closing the stream closes the runtime's generation."""

    async def characters(prompt: str, max_tokens: int, temperature: float, top_k: int, seed: int):
        steps = stream_text(export, prompt, max_tokens, temperature, top_k, seed)  # a bad request raises here
        lock, loop = threading.Lock(), asyncio.get_running_loop()  # one step at a time; closing waits for it

        def step():
            with lock:
                return next(steps, None)

        def close():
            with lock:
                steps.close()

        try:
            while True:
                chars = await loop.run_in_executor(pool, step)
                if chars is None:
                    return
                yield chars[0]
        finally:
            pool.submit(close)

    return characters


def add_routes(app, exports: dict, sources: dict):
    """Registers the completion routes for the text models `exports` ({name: Export}), whose characters
    come from `sources` ({name: async generator function}: `local_text`, or a Ray Serve replica's)."""

    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "zoo"}
                                           for name in exports]}

    async def completions(raw: Request):
        try:
            request = parse(await raw.body(), exports)
        except RequestError as e:
            return error(e)
        chars = sources[request["model"]](request["prompt"], request["max_tokens"], request["temperature"],
                                          request["top_k"], request["seed"])
        try:  # the first character, or the runtime's refusal (characters outside the vocabulary, sizes)
            first = await chars.__anext__()
        except StopAsyncIteration:
            first = None
        except Exception as e:
            cause = getattr(e, "cause", None) or e  # a Ray Serve replica's exception arrives wrapped
            if isinstance(cause, ValueError):
                return error(RequestError(str(cause).splitlines()[0], "prompt"))
            raise
        rid, created, model = f"cmpl-{uuid.uuid4().hex}", int(time.time()), request["model"]
        if not request["stream"]:
            text = "" if first is None else first + "".join([c async for c in chars])
            prompt_tokens = len(request["prompt"])
            return {"id": rid, "object": "text_completion", "created": created, "model": model,
                    "choices": [{"text": text, "index": 0, "finish_reason": "length", "logprobs": None}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text),
                              "total_tokens": prompt_tokens + len(text)}}

        async def events():
            try:
                if first is not None:
                    yield chunk(rid, created, model, first)
                    async for c in chars:
                        yield chunk(rid, created, model, c)
                yield chunk(rid, created, model, "", "length")
                yield "data: [DONE]\n\n"
            finally:  # also when the client went away: the generation ends at its next step
                await chars.aclose()

        return StreamingResponse(events(), media_type="text/event-stream")

    app.add_api_route("/openai/v1/models", models, methods=["GET"])
    app.add_api_route("/openai/v1/completions", completions, methods=["POST"])
