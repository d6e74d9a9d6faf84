"""The project's own OpenAI-compatible server: the pinned base model plus an optional LoRA adapter.

Run:  llmops serve --adapter models/adapter --host 127.0.0.1 --port 8000      (base from params.yaml paths)
      curl http://127.0.0.1:8000/v1/models
Production equivalent on a GPU box (same client code, same model ids):
      vllm serve <base> --enable-lora --lora-modules tuned=models/adapter --served-model-name base

Why not `transformers serve`: it silently drops `logprobs`/`top_logprobs` (the judge's G-Eval scoring needs
them) and cannot load a peft adapter folder (see FACTS.md). This is FastAPI + transformers + peft, ~300 lines:
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

`running_server(paths, adapter_dir)` starts it in a subprocess on a free loopback port for the judge stage,
the deploy smoke test and tests, and always stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

# module level: FastAPI resolves the endpoint's string annotations against this module's globals
from fastapi import Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

BASE_ID, TUNED_ID = "base", "tuned"
API_KEY_ENV = "LLMOPS_SERVE_API_KEY"
MAX_BODY_ENV = "LLMOPS_SERVE_MAX_BODY_BYTES"
DEFAULT_MAX_BODY = 1 << 20  # 1 MiB: ~250k tokens of English, far past any context this serves
DEFAULT_MAX_TOKENS = 256
MAX_STOP, MAX_STOP_CHARS = 4, 256  # OpenAI's limits on stop sequences (count); length: ours, generous
INT64 = 2**63


# ------------------------------------------------------------------------------------------- request model
class APIError(Exception):
    """An OpenAI-shaped error response: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def _content_text(content: Any) -> str:
    """OpenAI message content: a string or a list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    raise ValueError(
        'content must be a string or a list of {"type": "text", "text": <string>} parts (this server is text-only)'
    )


def _stop_list(stop: Any) -> list[str]:
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise ValueError("stop must be a string or a list of strings")
    if len(stop) > MAX_STOP:
        raise ValueError(f"at most {MAX_STOP} stop sequences, got {len(stop)}")
    if any(len(s) > MAX_STOP_CHARS for s in stop):
        raise ValueError(f"each stop sequence must be at most {MAX_STOP_CHARS} characters")
    return stop


def _strict(kind: type, **limits: Any) -> Any:
    """An optional JSON number/bool: strict (no "0.5" strings, no 5.0 for ints, no true for 1), finite."""
    return Annotated[kind | None, Field(strict=True, **limits)]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[Any, AfterValidator(_content_text)]


class ChatRequest(BaseModel):
    """The /v1/chat/completions body. Unknown fields are ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, Field(strict=True)]
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: _strict(int, ge=1, lt=INT64) = None
    max_completion_tokens: _strict(int, ge=1, lt=INT64) = None
    temperature: _strict(float, ge=0, le=2, allow_inf_nan=False) = None
    top_p: _strict(float, gt=0, le=1, allow_inf_nan=False) = None
    seed: _strict(int, ge=-INT64, lt=INT64) = None
    stop: Annotated[Any, AfterValidator(_stop_list), Field(validate_default=True)] = None  # -> list[str]
    n: _strict(int, ge=1, le=1) = None
    stream: _strict(bool) = None
    logprobs: _strict(bool) = None
    top_logprobs: _strict(int, ge=0, le=20) = None

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("stream=true is not supported by this server")
        return v

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, v: int | None, info) -> int | None:
        if v is not None and info.data.get("logprobs") is not True:
            raise ValueError("top_logprobs needs logprobs: true")
        return v


def _param(loc: tuple) -> str | None:
    """('messages', 0, 'role') -> 'messages[0].role' (None for the body itself)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def validation_error(exc: ValidationError) -> APIError:
    """The first problem, named: a client fixes one field at a time, and the message stays short."""
    err = exc.errors(include_url=False)[0]
    param = _param(err["loc"])
    kind = err["type"]
    code = (
        "missing_required_parameter"
        if kind == "missing"
        else "invalid_type"
        if kind.endswith(("_type", "_parsing"))
        else "invalid_value"
    )
    msg = err["msg"].removeprefix("Value error, ")
    shown = repr(err.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    where = f"{param}: " if param else "body: "
    return APIError(400, f"{where}{msg}" + ("" if kind == "missing" else f" (got {shown})"), param, code)


# ----------------------------------------------------------------------------------------------- model side
class Engine:
    """The loaded model and tokenizer; `chat` turns one validated request into one OpenAI-shaped choice."""

    def __init__(self, model, tokenizer, has_adapter: bool):
        import torch

        self.model, self.tokenizer, self.has_adapter = model, tokenizer, has_adapter
        self.device = next(model.parameters()).device
        self.lock = threading.Lock()
        self.torch = torch
        config = getattr(model, "config", None)
        self.context = getattr(config, "max_position_embeddings", None)
        self.created = int(time.time())

    @property
    def model_ids(self) -> list[str]:
        return [BASE_ID, TUNED_ID] if self.has_adapter else [BASE_ID]

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def _entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        text = self.token_text(token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    def chat(self, req: ChatRequest) -> dict[str, Any]:
        """Tokenise, check against the context, generate. Blocking: call it from a worker thread."""
        with self.lock:  # one request at a time: one model, and disable_adapter() is not thread-safe
            try:
                prompt_ids = self.encode_chat([{"role": m.role, "content": m.content} for m in req.messages])
            except Exception as exc:  # no chat template, a role the template rejects, unencodable text
                raise APIError(
                    400, f"messages: cannot apply the chat template: {exc}", "messages", "invalid_value"
                ) from exc
            n = len(prompt_ids)
            field = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
            asked = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
            if self.context:
                if n >= self.context:
                    raise APIError(
                        400,
                        f"messages: the prompt has {n} tokens; this model's context is {self.context} tokens",
                        "messages",
                        "context_length_exceeded",
                    )
                if asked is not None and asked > self.context:
                    raise APIError(
                        400,
                        f"{field}: {asked} is more than this model's context of {self.context} tokens",
                        field,
                        "invalid_value",
                    )
            max_tokens = DEFAULT_MAX_TOKENS if asked is None else asked
            if self.context:  # never generate past the context: positions beyond it are untrained
                max_tokens = min(max_tokens, self.context - n)
            top = (req.top_logprobs or 0) if req.logprobs else None
            temperature = 1.0 if req.temperature is None else req.temperature
            top_p = 1.0 if req.top_p is None else req.top_p
            result = self._generate(req.model, prompt_ids, max_tokens, temperature, top_p, req.seed, req.stop, top)
        result["prompt_tokens"] = n
        return result

    def _generate(
        self,
        model_id: str,
        prompt_ids: list[int],
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        stop: list[str],
        top_logprobs: int | None,
    ) -> dict[str, Any]:
        torch = self.torch
        sampling = temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "do_sample": sampling,
            "return_dict_in_generate": True,
            "output_logits": top_logprobs is not None,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if sampling:  # OpenAI semantics: no top-k; top_p and temperature only
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        ids = torch.tensor([prompt_ids], device=self.device)
        with torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)  # the request model keeps it in int64, which torch accepts
            adapter_off = (
                self.model.disable_adapter() if model_id == BASE_ID and self.has_adapter else contextlib.nullcontext()
            )
            with adapter_off:
                out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        new = out.sequences[0, len(prompt_ids) :].tolist()
        eos = self.tokenizer.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos]) - {None}
        finish = "length"
        if eos_ids:
            for i, tok in enumerate(new):
                if tok in eos_ids:  # the end-of-turn token is not part of the answer (OpenAI omits it too)
                    new, finish = new[:i], "stop"
                    break
        # stop strings: cut at the earliest one; keep only tokens wholly before it (their logprobs too)
        pieces = [self.token_text(t) for t in new]
        text = "".join(pieces)
        cut = min((p for p in (text.find(s) for s in stop if s) if p >= 0), default=-1)
        if cut >= 0:
            text, finish, length, keep = text[:cut], "stop", 0, 0
            for piece in pieces:
                if length + len(piece) > cut:
                    break
                length += len(piece)
                keep += 1
            new = new[:keep]
        else:
            text = self.tokenizer.decode(new, skip_special_tokens=True)
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
            "logprobs": None,
        }
        if top_logprobs is not None:
            content = []
            for step, tok in enumerate(new):
                logprobs = torch.log_softmax(out.logits[step][0].float(), dim=-1)
                entry = self._entry(tok, float(logprobs[tok]))
                k = min(top_logprobs, logprobs.shape[-1])
                values, indices = torch.topk(logprobs, k) if k else (torch.tensor([]), torch.tensor([]))
                entry["top_logprobs"] = [self._entry(int(i), float(v)) for v, i in zip(values, indices, strict=True)]
                content.append(entry)
            choice["logprobs"] = {"content": content, "refusal": None}
        return {"choice": choice, "completion_tokens": len(new)}


def load_engine(base_ref: str, revision: str | None, adapter_dir: Path | None) -> Engine:
    import torch

    from llmops.model import load_model, load_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_tokenizer((base_ref, revision))
    model = load_model((base_ref, revision), adapter=adapter_dir, device=device)
    model.eval()
    return Engine(model, tokenizer, adapter_dir is not None)


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


def _get(url: str, timeout: float = 2.0) -> int:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URL we built
        return resp.status


@contextlib.contextmanager
def running_server(
    paths_or_base_ref: Any,
    adapter_dir: Path | str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = 300.0,
    log_file: Path | None = None,
    api_key: str | None = None,
) -> Iterator[str]:
    """Serve base (+ "tuned" if adapter_dir) in a subprocess; yield "http://HOST:PORT/v1"; always stop it.

    A subprocess (not a thread) so stopping is a signal, not a cooperative flag, and a crash in the model
    cannot take the caller down. The child binds the port itself (port 0 = a free one) and reports it via
    a file, so there is no pick-then-bind race. OPENAI_API_KEY is removed from the child's environment:
    the server never needs it. Its stderr goes to ours (or to log_file), at warning level: no access log.
    api_key, if given, becomes the child's LLMOPS_SERVE_API_KEY (through the environment, never argv);
    otherwise the child inherits ours. Readiness is polled on /health, which needs no key.
    """
    from llmops.errors import StageError
    from llmops.model import reference

    base_ref, revision = reference(paths_or_base_ref)
    scratch = Path(tempfile.mkdtemp(prefix="llmops-serve-"))
    port_file = scratch / "port"
    cmd = [
        sys.executable,
        "-m",
        "llmops.serve",
        "--model",
        base_ref,
        "--host",
        host,
        "--port",
        str(port),
        "--port-file",
        str(port_file),
        "--quiet",
    ]
    if revision:
        cmd += ["--revision", revision]
    if adapter_dir is not None:
        if not Path(adapter_dir).is_dir():
            raise StageError(f"{adapter_dir}: adapter folder not found; run the train stage first")
        cmd += ["--adapter", str(adapter_dir)]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    if api_key is not None:
        env[API_KEY_ENV] = api_key
    log = open(log_file, "ab") if log_file else None  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, env=env, stdout=log or subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + startup_timeout_s
        url = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StageError(
                    f"model server exited with code {proc.returncode} before it was ready "
                    f"(model {base_ref}, adapter {adapter_dir}); its error is above"
                )
            if url is None and port_file.is_file():
                url = f"http://{'[' + host + ']' if ':' in host else host}:{port_file.read_text().strip()}"
            if url is not None:
                with contextlib.suppress(OSError):
                    if _get(f"{url}/health") == 200:
                        break
            time.sleep(0.2)
        else:
            raise StageError(f"model server not ready within {startup_timeout_s:.0f} s (model {base_ref})")
        yield f"{url}/v1"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log:
            log.close()
        with contextlib.suppress(OSError):
            for f in scratch.iterdir():
                f.unlink()
            scratch.rmdir()


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
