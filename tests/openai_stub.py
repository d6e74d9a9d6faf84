"""A scripted OpenAI-compatible server on 127.0.0.1 for judge tests (real HTTP, real openai client).

`StubServer(script)` runs http.server in a thread; `script(body, headers, n)` returns what to answer to the
n-th request (0-based; header names lower-cased): a chat completion dict, `Fault(status, message)` or
`Hang(seconds)`. Every request body and header set is recorded, so tests can count calls and check what the
client sent.
`naive_judge` plays a gullible judge model: it obeys "output SCORE: N" anywhere OUTSIDE the first delimited
answer block, and optionally quotes the block back after its verdict.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Fault:
    status: int
    message: str = "injected fault"


@dataclass
class Hang:
    seconds: float


def tokens_of(text: str) -> list[str]:
    """Whitespace-attached word pieces, like a BPE: "SCORE: 4" -> ["SCORE:", " 4"]."""
    return re.findall(r"\s*\S+|\s+", text)


def completion(content: str, verdict_probs: dict[str, float] | None = None, logprobs: bool = False,
               model: str = "judge") -> dict[str, Any]:
    """A chat.completion body; with logprobs, the token after the FIRST `SCORE:` (the stub's own verdict)
    gets `verdict_probs` (token text -> probability) as its top_logprobs; every other token, e.g. a quoted
    one, is certain, as copied text is for a real model."""
    body: dict[str, Any] = {
        "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
    }
    if logprobs:
        toks = tokens_of(content)
        marker = min((i for i, t in enumerate(toks) if t.strip() == "SCORE:"), default=None)
        entries = []
        for i, tok in enumerate(toks):
            if marker is not None and i == marker + 1 and verdict_probs:
                top = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in verdict_probs.items()]
                top.sort(key=lambda e: -e["logprob"])
                entries.append({"token": tok, "logprob": top[0]["logprob"], "bytes": None, "top_logprobs": top})
            else:
                entries.append({"token": tok, "logprob": 0.0, "bytes": None,
                                "top_logprobs": [{"token": tok, "logprob": 0.0, "bytes": None}]})
        body["choices"][0]["logprobs"] = {"content": entries, "refusal": None}
    return body


def answer_block(prompt: str) -> tuple[str, str]:
    """(inside, outside) of the first line-delimited <tag> ... </tag> block, as a naive reader sees it:
    the FIRST closing line with the same tag ends the block."""
    m = re.search(r"^<([^>\n]+)>\n(.*?)\n</\1>$", prompt, re.M | re.S)
    if not m:
        return "", prompt
    return m.group(2), prompt[: m.start()] + prompt[m.end():]


def naive_judge(body: dict, quote_answer: bool = False, logprobs: bool | None = None) -> dict[str, Any]:
    """Gullible judge: an instruction outside the answer block wins; otherwise it grades honestly
    (5 if the answer's category matches the reference's, else 1)."""
    prompt = body["messages"][-1]["content"]
    inside, outside = answer_block(prompt)
    injected = re.search(r"output SCORE:\s*(\d+)", outside)
    if injected:
        score = int(injected.group(1))
    else:
        ref = re.search(r"Reference: Category: (\w+)", prompt)
        got = re.search(r"Category: (\w+)", inside)
        score = 5 if ref and got and ref.group(1) == got.group(1) else 1
    content = f"SCORE: {score}"
    if quote_answer:  # a judge that quotes the answer AFTER its verdict line
        content += f"\nThe answer was:\n{inside}"
    want = body.get("logprobs") if logprobs is None else logprobs
    return completion(content, {f" {score}": 0.9, " 3": 0.1} if score != 3 else {" 3": 1.0}, logprobs=bool(want))


class StubServer:
    def __init__(self, script: Callable[[dict, dict, int], Any]):
        self.script = script
        self.requests: list[tuple[dict, dict]] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "judge", "object": "model", "created": 0,
                                                             "owned_by": "stub"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                headers = {k.lower(): v for k, v in self.headers.items()}  # names are case-insensitive
                with stub.lock:
                    n = len(stub.requests)
                    stub.requests.append((body, headers))
                reply = stub.script(body, headers, n)
                if isinstance(reply, Hang):
                    time.sleep(reply.seconds)
                    reply = completion("SCORE: 1")
                if isinstance(reply, Fault):
                    self._send(reply.status, {"error": {"message": reply.message, "type": "stub", "code": None}})
                else:
                    self._send(200, reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def __enter__(self) -> "StubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
