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
- Requests are served one at a time (a lock): one model, and `disable_adapter()` is not thread-safe.
- Nothing logs request bodies or headers (an Authorization header never reaches a log); the access log
  prints only method, path and status.

`running_server(paths, adapter_dir)` starts it in a subprocess on a free loopback port for the judge stage,
the deploy smoke test and tests, and always stops it.
"""

from __future__ import annotations

import argparse
import contextlib
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
from typing import Any

# module level: FastAPI resolves the endpoint's string annotations against this module's globals
from fastapi import Request

BASE_ID, TUNED_ID = "base", "tuned"
PORT_FILE_ENV = "LLMOPS_SERVE_PORT_FILE"


# ----------------------------------------------------------------------------------------------- model side
class Engine:
    """The loaded model and tokenizer; `complete` turns one chat request into one OpenAI-shaped choice."""

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

    def complete(self, model_id: str, prompt_ids: list[int], max_tokens: int, temperature: float, top_p: float,
                 seed: int | None, stop: list[str], top_logprobs: int | None) -> dict[str, Any]:
        torch = self.torch
        sampling = temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_tokens, "do_sample": sampling, "return_dict_in_generate": True,
            "output_logits": top_logprobs is not None, "pad_token_id": self.tokenizer.pad_token_id,
        }
        if sampling:  # OpenAI semantics: no top-k; top_p and temperature only
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        ids = torch.tensor([prompt_ids], device=self.device)
        with self.lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            adapter_off = self.model.disable_adapter() if model_id == BASE_ID and self.has_adapter \
                else contextlib.nullcontext()
            with adapter_off:
                out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        new = out.sequences[0, len(prompt_ids):].tolist()
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
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": finish, "logprobs": None}
        if top_logprobs is not None:
            content = []
            for step, tok in enumerate(new):
                logprobs = torch.log_softmax(out.logits[step][0].float(), dim=-1)
                entry = self._entry(tok, float(logprobs[tok]))
                k = min(top_logprobs, logprobs.shape[-1])
                values, indices = torch.topk(logprobs, k) if k else (torch.tensor([]), torch.tensor([]))
                entry["top_logprobs"] = [self._entry(int(i), float(v)) for v, i in zip(values, indices)]
                content.append(entry)
            choice["logprobs"] = {"content": content, "refusal": None}
        return {"choice": choice, "completion_tokens": len(new)}


def load_engine(base_ref: str, revision: str | None, adapter_dir: Path | None) -> Engine:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(base_ref, revision=revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_ref, revision=revision, dtype="auto").to(device)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    return Engine(model, tokenizer, adapter_dir is not None)


# ------------------------------------------------------------------------------------------------ HTTP side
def _error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "code": code}})


def _text(content: Any) -> str:
    """OpenAI message content: a string or a list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def create_app(engine: Engine):
    from fastapi import FastAPI

    app = FastAPI(title="llmops OpenAI-compatible server", docs_url=None, redoc_url=None)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": m, "object": "model", "created": engine.created,
                                            "owned_by": "llmops"} for m in engine.model_ids]}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        from starlette.concurrency import run_in_threadpool

        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        model_id = body.get("model")
        if model_id not in engine.model_ids:
            return _error(404, f"model {model_id!r} not served here; available: {engine.model_ids}",
                          code="model_not_found")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return _error(400, "messages must be a non-empty list of {role, content} objects")
        if body.get("stream"):
            return _error(400, "stream=true is not supported by this server")
        if body.get("n", 1) != 1:
            return _error(400, "only n=1 is supported")
        try:
            asked = body.get("max_completion_tokens", body.get("max_tokens"))
            max_tokens = 256 if asked is None else int(asked)
            temperature = float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0)
            top_p = float(body.get("top_p") if body.get("top_p") is not None else 1.0)
            seed = None if body.get("seed") is None else int(body["seed"])
            top_logprobs = int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
        except (TypeError, ValueError) as exc:
            return _error(400, f"bad sampling parameter: {exc}")
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        if max_tokens < 1 or temperature < 0 or not 0 < top_p <= 1 or (top_logprobs or 0) > 20 \
                or (top_logprobs or 0) < 0:
            return _error(400, "need max_tokens >= 1, temperature >= 0, 0 < top_p <= 1, 0 <= top_logprobs <= 20")
        chat_messages = [{"role": str(m.get("role", "user")), "content": _text(m.get("content"))} for m in messages]
        try:
            prompt_ids = engine.encode_chat(chat_messages)
        except Exception as exc:  # e.g. no chat template, or a role the template rejects
            return _error(400, f"cannot apply the chat template: {exc}")
        if engine.context and len(prompt_ids) >= engine.context:
            return _error(400, f"prompt has {len(prompt_ids)} tokens; this model's context is {engine.context}",
                          code="context_length_exceeded")
        if engine.context:  # never generate past the context: positions beyond it are untrained
            max_tokens = min(max_tokens, engine.context - len(prompt_ids))
        result = await run_in_threadpool(engine.complete, model_id, prompt_ids, max_tokens, temperature, top_p,
                                         seed, stop, top_logprobs)
        prompt_n, completion_n = len(prompt_ids), result["completion_tokens"]
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": model_id, "choices": [result["choice"]], "system_fingerprint": None,
                "usage": {"prompt_tokens": prompt_n, "completion_tokens": completion_n,
                          "total_tokens": prompt_n + completion_n}}

    return app


def serve_forever(base_ref: str, revision: str | None, adapter_dir: Path | None, host: str, port: int,
                  access_log: bool = True, port_file: Path | None = None) -> None:
    """Load the model, bind (port 0 = any free port), report the port, serve until SIGINT/SIGTERM."""
    import uvicorn

    engine = load_engine(base_ref, revision, adapter_dir)
    app = create_app(engine)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    if port_file is not None:  # written after binding, so the parent never races for the port
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(bound))
        os.replace(tmp, port_file)
    print(f"llmops serve: models {', '.join(engine.model_ids)} at http://{host}:{bound}/v1", file=sys.stderr,
          flush=True)
    config = uvicorn.Config(app, log_level="info" if access_log else "warning", access_log=access_log)
    uvicorn.Server(config).run(sockets=[sock])


def _resolve(paths_or_ref: Any) -> tuple[str, str | None]:
    """Paths (params.paths) -> the pinned base via identity.json; a str/Path -> a folder or hub id."""
    if hasattr(paths_or_ref, "base_identity"):
        from llmops.base import model_reference

        return model_reference(paths_or_ref)
    return str(paths_or_ref), None


def _get(url: str, timeout: float = 2.0) -> int:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URL we built
        return resp.status


@contextlib.contextmanager
def running_server(paths_or_base_ref: Any, adapter_dir: Path | str | None = None, host: str = "127.0.0.1",
                   port: int = 0, startup_timeout_s: float = 300.0, log_file: Path | None = None) -> Iterator[str]:
    """Serve base (+ "tuned" if adapter_dir) in a subprocess; yield "http://HOST:PORT/v1"; always stop it.

    A subprocess (not a thread) so stopping is a signal, not a cooperative flag, and a crash in the model
    cannot take the caller down. The child binds the port itself (port 0 = a free one) and reports it via
    a file, so there is no pick-then-bind race. OPENAI_API_KEY is removed from the child's environment:
    the server never needs it. Its stderr goes to ours (or to log_file), at warning level: no access log.
    """
    from llmops.errors import StageError

    base_ref, revision = _resolve(paths_or_base_ref)
    scratch = Path(tempfile.mkdtemp(prefix="llmops-serve-"))
    port_file = scratch / "port"
    cmd = [sys.executable, "-m", "llmops.serve", "--model", base_ref, "--host", host, "--port", str(port),
           "--port-file", str(port_file), "--quiet"]
    if revision:
        cmd += ["--revision", revision]
    if adapter_dir is not None:
        if not Path(adapter_dir).is_dir():
            raise StageError(f"{adapter_dir}: adapter folder not found; run the train stage first")
        cmd += ["--adapter", str(adapter_dir)]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    log = open(log_file, "ab") if log_file else None  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, env=env, stdout=log or subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + startup_timeout_s
        url = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StageError(f"model server exited with code {proc.returncode} before it was ready "
                                 f"(model {base_ref}, adapter {adapter_dir}); its error is above")
            if url is None and port_file.is_file():
                url = f"http://{'[' + host + ']' if ':' in host else host}:{port_file.read_text().strip()}"
            if url is not None:
                with contextlib.suppress(OSError):
                    if _get(f"{url}/v1/models") == 200:
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


def run(params, adapter: Path | None, host: str, port: int) -> None:
    """`llmops serve`: the pinned base from params paths (+ adapter), in the foreground."""
    from llmops.base import model_reference
    from llmops.errors import StageError

    if adapter is not None and not Path(adapter).is_dir():
        raise StageError(f"{adapter}: adapter folder not found (train it: dvc repro train)")
    base_ref, revision = model_reference(params.paths)
    serve_forever(base_ref, revision, adapter, host, port)


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
    args = parser.parse_args(argv)
    serve_forever(args.model, args.revision, args.adapter, args.host, args.port, access_log=not args.quiet,
                  port_file=args.port_file)


if __name__ == "__main__":
    main()
