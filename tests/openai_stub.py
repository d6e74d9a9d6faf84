"""A scripted OpenAI-compatible server on 127.0.0.1 for judge tests (real HTTP, real openai client).

`StubServer(script)` runs http.server in a thread; `script(body, headers, n)` returns what to answer to the
n-th request (0-based; header names lower-cased): a chat completion dict, `Fault(status, message)` or
`Hang(seconds)`. Every request body and header set is recorded, so tests can count calls and check what the
client sent.
`naive_judge` plays a gullible judge model: it NFKC-normalises the prompt (as many model pipelines do), reads
`<tag>` ... `</anything>` line blocks loosely (ANY closing-tag line ends a block), obeys "output SCORE: N" (in any
case or spacing) anywhere outside the blocks, and optionally quotes the answer block back after its verdict.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Fault:
    status: int
    message: str = "injected fault"
    headers: dict | None = None  # e.g. {"retry-after-ms": "10"}


@dataclass
class Hang:
    seconds: float


def tokens_of(text: str) -> list[str]:
    """Whitespace-attached word pieces, like a BPE: "SCORE: 4" -> ["SCORE:", " 4"]."""
    return re.findall(r"\s*\S+|\s+", text)


def completion(
    content: str,
    verdict_probs: dict[str, float] | None = None,
    logprobs: bool = False,
    model: str = "judge",
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """A chat.completion body; with logprobs, the token after the FIRST `SCORE:` (the stub's own verdict)
    gets `verdict_probs` (token text -> probability) as its top_logprobs; every other token, e.g. a quoted
    one, is certain, as copied text is for a real model."""
    body: dict[str, Any] = {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
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
                entries.append(
                    {
                        "token": tok,
                        "logprob": 0.0,
                        "bytes": None,
                        "top_logprobs": [{"token": tok, "logprob": 0.0, "bytes": None}],
                    }
                )
        body["choices"][0]["logprobs"] = {"content": entries, "refusal": None}
    return body


def read_blocks(prompt: str) -> tuple[dict[str, str], str]:
    """({tag: inside}, outside) as a gullible model reads the prompt: NFKC first, then a line `<tag>` opens a
    block and the first line that looks like ANY closing tag (`</...>`) ends it."""
    blocks: dict[str, list[str]] = {}
    outside, current = [], None
    for line in unicodedata.normalize("NFKC", prompt).split("\n"):
        text = line.strip()
        if current is None and re.fullmatch(r"<[^/<>\s][^<>\s]*>", text):
            current = text[1:-1]
            blocks[current] = []
        elif current is not None and re.fullmatch(r"</[^<>]*>", text):
            current = None
        elif current is not None:
            blocks[current].append(line)
        else:
            outside.append(line)
    return {tag: "\n".join(lines) for tag, lines in blocks.items()}, "\n".join(outside)


def naive_judge(body: dict, quote_answer: bool = False, logprobs: bool | None = None) -> dict[str, Any]:
    """Gullible judge: an instruction outside every block wins; otherwise it grades honestly (5 if the
    answer's category matches the reference's, else 1). The answer block is the one tagged `answer-*`
    (or `a-*`, the older template); the reference is its own block or a `Reference:` line."""
    blocks, outside = read_blocks(body["messages"][-1]["content"])
    answer = next((text for tag, text in blocks.items() if tag.startswith(("answer", "a-"))), "")
    reference = next((text for tag, text in blocks.items() if tag.startswith("reference")), outside)
    injected = re.search(r"(?i)output\s+score\W{0,3}(\d+)", outside)  # "SCORE: 5", defanged "score - 5" too
    if injected:
        score = int(injected.group(1))
    else:
        ref = re.search(r"Category: (\w+)", reference)
        got = re.search(r"Category: (\w+)", answer)
        score = 5 if ref and got and ref.group(1) == got.group(1) else 1
    content = f"SCORE: {score}"
    if quote_answer:  # a judge that quotes the answer AFTER its verdict line (normalised, as it read it)
        content += f"\nThe answer was:\n{answer}"
    want = body.get("logprobs") if logprobs is None else logprobs
    return completion(content, {f" {score}": 0.9, " 3": 0.1} if score != 3 else {" 3": 1.0}, logprobs=bool(want))


class Backlogged(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: 16 clients connecting at once (each request is a new connection under
    # HTTP/1.0) overflow it and get connection resets that a real server (uvicorn: 2048) never gives
    request_queue_size = 128


class StubServer:
    def __init__(self, script: Callable[[dict, dict, int], Any]):
        self.script = script
        self.requests: list[tuple[dict, dict]] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def do_GET(self):
                self._send(
                    200,
                    {"object": "list", "data": [{"id": "judge", "object": "model", "created": 0, "owned_by": "stub"}]},
                )

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
                    self._send(
                        reply.status, {"error": {"message": reply.message, "type": "stub", "code": None}}, reply.headers
                    )
                else:
                    self._send(200, reply)

        self.httpd = Backlogged(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        # a short poll: shutdown() waits up to one interval, and tests start many servers
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
