"""The project's own OpenAI-compatible server: the pinned base model plus an optional LoRA adapter.

Run:  llmops serve --adapter models/adapter --host 127.0.0.1 --port 8000      (base from params.yaml paths)
      curl http://127.0.0.1:8000/v1/models
Production equivalent on a GPU box (same client code, same model ids):
      vllm serve <base> --enable-lora --lora-modules tuned=models/adapter --served-model-name base

Why not `transformers serve`: it silently drops `logprobs`/`top_logprobs` (the judge's G-Eval scoring needs
them) and cannot load a peft adapter folder (see FACTS.md). This is FastAPI + transformers + peft, in four modules:
this one (HTTP and the server process), llmops.serve_api (the request model), llmops.serve_engine (the model side)
and llmops.serve_client (start, wait for and stop a server: what the judge and deploy use).
- `/v1/models` lists "base" and, when an adapter is given, "tuned". One process holds one PeftModel; "base"
  runs with the adapter disabled (`model.disable_adapter()`), so both ids cost one copy of the weights.
- `/v1/chat/completions`: messages -> the tokenizer's chat template; max_tokens (or max_completion_tokens),
  temperature (0 = greedy), top_p, seed, stop, logprobs + top_logprobs in the shape the openai client
  parses (`choices[0].logprobs.content[i].top_logprobs`), usage token counts. No streaming, n = 1.
  Logprobs are the model's raw log-softmax (before temperature/top_p), as OpenAI reports them.
- Every request body is validated by one pydantic model (`ChatRequest`): a bad value is HTTP 400 in the
  OpenAI error shape naming the field (`error.param`), never a 500; fields we do not know are ignored (the
  openai client sends `user`, `stream: false`, ...). Limits follow OpenAI: temperature 0-2, top_p (0, 1],
  seed int64, at most 4 stop strings, top_logprobs 0-20 (and only with logprobs: true).
- Bodies over `--max-body-bytes` (env LLMOPS_SERVE_MAX_BODY_BYTES, default 1 MiB) are answered 413 before
  they are parsed; a prompt longer than the model's context is 400 with its token count and the limit.
- Tokenising and generating run in a worker thread under one lock: one model, and `disable_adapter()` is not
  thread-safe, so requests are served one at a time, but the event loop stays free (a 1 MB prompt does not
  stall /health or /v1/models).
- With LLMOPS_SERVE_API_KEY set, every path but /health needs `Authorization: Bearer <key>` (constant-time
  compare), else 401. The key is read from the environment only, never from argv or params.
- Nothing logs request bodies or headers (neither the key nor a prompt reaches a log); the access log
  prints only method, path and status.

`llmops.serve_client.running_server(source, adapter_dir)` starts it in a subprocess on a free loopback port for the
judge stage, the deploy smoke test and tests, and always stops it.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

# module level: FastAPI resolves the endpoint's string annotations against this module's globals
from fastapi import Request
from pydantic import ValidationError

from llmops.serve_api import API_KEY_ENV, APIError, ChatRequest, validation_error
from llmops.serve_engine import Engine, load_engine

MAX_BODY_ENV = "LLMOPS_SERVE_MAX_BODY_BYTES"
DEFAULT_MAX_BODY = 1 << 20  # 1 MiB: ~250k tokens of English, far past any context this serves


# ------------------------------------------------------------------------------------------------ HTTP side
def _error(
    status: int, message: str, kind: str = "invalid_request_error", code: str | None = None, param: str | None = None
):
    from fastapi.responses import JSONResponse

    return JSONResponse(
        status_code=status, content={"error": {"message": message, "type": kind, "param": param, "code": code}}
    )


class Guard:
    """ASGI middleware run before any route: the bearer key (if set), then the body size limit.

    The body is read here, up to the limit, and replayed to the app; nothing is parsed before both checks
    pass. Past the limit the rest is read and discarded (not kept) before the 413, up to DRAIN_CAP: a client
    still writing its body when the server closes gets a broken pipe instead of the 413 (and the openai client
    would retry that as a connection error). A declared Content-Length past DRAIN_CAP is refused at once.
    """

    DRAIN_CAP = 64 << 20

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.max_body = app, max_body_bytes
        self.key = api_key.encode() if api_key else None

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        # compare_digest on the whole token: time does not depend on where a wrong key differs
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.key is not None and scope["path"] != "/health" and not self._authorised(headers):
            return await _error(
                401,
                f"missing or incorrect API key: send 'Authorization: Bearer <key>' (the server's {API_KEY_ENV})",
                code="invalid_api_key",
            )(scope, receive, send)
        too_big = _error(
            413,
            f"request body is larger than this server's limit of {self.max_body} bytes "
            f"(--max-body-bytes / {MAX_BODY_ENV})",
            code="request_too_large",
        )
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max(self.max_body, self.DRAIN_CAP)):
            return await too_big(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client went away: nothing to answer
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
            if size <= self.max_body:
                chunks.append(message.get("body", b""))
            elif not more or size > self.DRAIN_CAP:
                return await too_big(scope, receive, send)
            else:
                chunks = []  # over the limit: keep draining, keep nothing
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def create_app(engine: Engine, api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY):
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    app = FastAPI(title="llmops OpenAI-compatible server", docs_url=None, redoc_url=None)
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)

    @app.exception_handler(APIError)
    async def api_error(_request, exc: APIError):
        return _error(exc.status, exc.message, exc.kind, exc.code, exc.param)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):  # 404 unknown path, 405 wrong method: same shape
        return _error(exc.status_code, str(exc.detail), code=None)

    @app.exception_handler(Exception)
    async def server_error(_request, exc: Exception):  # the traceback goes to the log, not to the client
        return _error(500, f"internal server error ({type(exc).__name__})", "server_error")

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": engine.created, "owned_by": "llmops"} for m in engine.model_ids
            ],
        }

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        raw = await request.body()  # already bounded by Guard
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested past Python's stack
            raise APIError(400, f"body is not valid JSON: {str(exc)[:200]}", code="invalid_json") from None
        try:
            req = ChatRequest.model_validate(body)
        except ValidationError as exc:
            raise validation_error(exc) from None
        if req.model not in engine.model_ids:
            raise APIError(
                404, f"model {req.model!r} not served here; available: {engine.model_ids}", "model", "model_not_found"
            )
        # tokenising a long prompt takes seconds: off the event loop, so /health and /v1/models stay live
        result = await run_in_threadpool(engine.chat, req)
        prompt_n, completion_n = result["prompt_tokens"], result["completion_tokens"]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [result["choice"]],
            "system_fingerprint": None,
            "usage": {
                "prompt_tokens": prompt_n,
                "completion_tokens": completion_n,
                "total_tokens": prompt_n + completion_n,
            },
        }

    return app


def max_body_default() -> int:
    """--max-body-bytes' default: LLMOPS_SERVE_MAX_BODY_BYTES if set, else 1 MiB."""
    from llmops.errors import ConfigError

    raw = os.environ.get(MAX_BODY_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BODY
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{MAX_BODY_ENV}={raw!r}: must be a positive integer (bytes)")
    return int(raw)


def serve_forever(
    base_ref: str,
    revision: str | None,
    adapter_dir: Path | None,
    host: str,
    port: int,
    access_log: bool = True,
    port_file: Path | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
) -> None:
    """Load the model, bind (port 0 = any free port), report the port, serve until SIGINT/SIGTERM."""
    import uvicorn

    api_key = os.environ.get(API_KEY_ENV) or None
    engine = load_engine(base_ref, revision, adapter_dir)
    app = create_app(engine, api_key, max_body_bytes)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    if port_file is not None:  # written after binding, so the parent never races for the port
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(bound))
        os.replace(tmp, port_file)
    auth = f"API key required ({API_KEY_ENV})" if api_key else f"no API key ({API_KEY_ENV} unset)"
    print(
        f"llmops serve: models {', '.join(engine.model_ids)} at http://{host}:{bound}/v1; {auth}; "
        f"max body {max_body_bytes} bytes",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(app, log_level="info" if access_log else "warning", access_log=access_log)
    uvicorn.Server(config).run(sockets=[sock])


def run(params, adapter: Path | None, host: str, port: int, max_body_bytes: int | None = None) -> None:
    """`llmops serve`: the pinned base from params paths (+ adapter), in the foreground."""
    from llmops.errors import StageError
    from llmops.model import model_reference

    if adapter is not None and not Path(adapter).is_dir():
        raise StageError(f"{adapter}: adapter folder not found (train it: dvc repro train)")
    base_ref, revision = model_reference(params.paths)
    serve_forever(base_ref, revision, adapter, host, port, max_body_bytes=max_body_bytes or max_body_default())


def main(argv: list[str] | None = None) -> None:
    """`python -m llmops.serve --model DIR_OR_HUB_ID [--adapter DIR]`: what running_server launches."""
    parser = argparse.ArgumentParser(description="OpenAI-compatible server for a base model + LoRA adapter")
    parser.add_argument("--model", required=True)
    parser.add_argument("--revision")
    parser.add_argument("--adapter", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--quiet", action="store_true", help="no access log (warnings and errors only)")
    parser.add_argument("--max-body-bytes", type=int, help=f"larger bodies get 413 (default: {MAX_BODY_ENV} or 1 MiB)")
    args = parser.parse_args(argv)
    if args.max_body_bytes is not None and args.max_body_bytes < 1:
        parser.error("--max-body-bytes must be >= 1")
    from llmops.errors import StageError

    try:
        max_body = args.max_body_bytes or max_body_default()
    except StageError as exc:
        parser.error(str(exc))
    serve_forever(
        args.model,
        args.revision,
        args.adapter,
        args.host,
        args.port,
        access_log=not args.quiet,
        port_file=args.port_file,
        max_body_bytes=max_body,
    )


if __name__ == "__main__":
    main()
