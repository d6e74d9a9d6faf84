"""The project's OpenAI-compatible server (llmops.serve) with the tiny model and a trained adapter, spoken to
by the real openai client over 127.0.0.1: model ids, greedy chat, logprobs/top_logprobs, stop, usage,
errors, no secrets in its log, and running_server always stopping its subprocess. Hardening (issue #12): every
bad request value is a 400 naming the field (never a 500), a body size limit (413), a long prompt tokenised off
the event loop, and the optional bearer key (LLMOPS_SERVE_API_KEY). The module's server runs with a key.

Run:  pytest tests/test_serve.py        (~1.5 min: builds the tiny base, trains 8 LoRA steps, serves it)
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import openai
import pytest

from llmops.errors import StageError
from llmops.serve import DEFAULT_MAX_BODY
from llmops.serve_client import running_server

pytestmark = pytest.mark.slow

MESSAGES = [
    {"role": "system", "content": "Triage the telecom incident. Reply with the category and the next action."},
    {"role": "user", "content": "Alert at 10:15: the MME pool rejects attach requests."},
]
KEY = "sk-llmops-test-key-0123456789"


@pytest.fixture(scope="module")
def server(trained_workdir):
    """One running server for the module (startup is the slow part), paths made absolute."""
    from llmops.config import load_params

    cwd = os.getcwd()
    os.chdir(trained_workdir)
    try:
        paths = load_params().paths
    finally:
        os.chdir(cwd)
    base, adapter = trained_workdir / paths.base_dir, trained_workdir / paths.adapter_dir
    with running_server(base, adapter, api_key=KEY) as url:
        yield url, base


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)


def post(url: str, body: bytes | str, key: str | None = KEY, path: str = "/chat/completions") -> tuple[int, dict]:
    """Raw POST (the openai client would refuse to send some of these bodies): (status, parsed JSON)."""
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    req = urllib.request.Request(url + path, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_models_lists_base_and_tuned(server):
    url, _ = server
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    assert sorted(m.id for m in client(url).models.list()) == ["base", "tuned"]


def test_chat_with_logprobs_in_the_openai_shape(server):
    from transformers import AutoTokenizer

    url, base = server
    c = client(url)
    got = {}
    for model in ("tuned", "base"):
        resp = c.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=12, temperature=0, seed=0, logprobs=True, top_logprobs=5
        )
        choice = resp.choices[0]
        content = choice.logprobs.content
        assert resp.model == model and choice.finish_reason in {"stop", "length"}
        assert 0 < len(content) == resp.usage.completion_tokens <= 12
        for tok in content:
            tops = tok.top_logprobs
            assert len(tops) == 5 and all(t.logprob <= 0 for t in tops)
            assert [t.logprob for t in tops] == sorted((t.logprob for t in tops), reverse=True)
            assert tok.token == tops[0].token and tok.logprob == pytest.approx(tops[0].logprob)  # greedy
        assert "".join(t.token for t in content).strip() == choice.message.content.strip()
        tokenizer = AutoTokenizer.from_pretrained(base)
        prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
        assert resp.usage.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
        got[model] = [t.logprob for t in content[0].top_logprobs]
        again = c.chat.completions.create(model=model, messages=MESSAGES, max_tokens=12, temperature=0)
        assert again.choices[0].message.content == choice.message.content  # greedy is repeatable
        assert again.choices[0].logprobs is None  # not asked for
    assert got["tuned"] != got["base"]  # "base" really runs with the adapter disabled


def test_stop_seed_and_errors(server):
    url, _ = server
    c = client(url)
    full = c.chat.completions.create(model="tuned", messages=MESSAGES, max_tokens=20, temperature=0)
    text = full.choices[0].message.content
    assert len(text) > 6
    stop = text[4:6]
    cut = c.chat.completions.create(model="tuned", messages=MESSAGES, max_tokens=20, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == text[: text.find(stop)] and cut.choices[0].finish_reason == "stop"

    sampled = [
        c.chat.completions.create(model="tuned", messages=MESSAGES, max_tokens=10, temperature=1.5, seed=seed)
        .choices[0]
        .message.content
        for seed in (1, 1, 2, 3, 4)
    ]
    assert sampled[0] == sampled[1]  # same seed, same sample
    assert len(set(sampled)) > 1

    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="base", messages=MESSAGES, max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="context"):
        c.chat.completions.create(model="base", messages=[{"role": "user", "content": "word " * 5000}])


def test_access_log_never_shows_the_key_or_body(server, tmp_path):
    """`llmops serve`'s access log (on by default) prints method, path and status only: neither the server's
    key (LLMOPS_SERVE_API_KEY), nor a wrong key a client sent, nor the prompt."""
    _, base = server
    log = tmp_path / "serve.log"
    port_file = tmp_path / "port"
    secret, wrong = "sk-secret-in-header-1234", "sk-wrong-key-5678"
    env = dict(os.environ, LLMOPS_SERVE_API_KEY=secret)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmops.serve", "--model", str(base), "--port", "0", "--port-file", str(port_file)],
            stdout=fh,
            stderr=fh,
            env=env,
        )
    try:
        for _ in range(600):
            if port_file.is_file():
                break
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port_file.read_text()}/v1"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url[:-3]}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        resp = openai.OpenAI(base_url=url, api_key=secret).chat.completions.create(
            model="base", messages=[{"role": "user", "content": f"my key is {secret}"}], max_tokens=2
        )
        assert resp.choices[0].message.content is not None
        with pytest.raises(openai.AuthenticationError):
            client(url, wrong).models.list()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    text = log.read_text()
    assert "POST /v1/chat/completions" in text and "200" in text and "401" in text
    assert "API key required" in text
    assert secret not in text and wrong not in text and "my key is" not in text


def test_running_server_stops_even_on_error(trained_workdir):
    base = trained_workdir / "models/base"
    with pytest.raises(RuntimeError, match="boom"):
        with running_server(base) as url:
            assert [m.id for m in client(url).models.list()] == ["base"]  # no adapter: base only
            raise RuntimeError("boom")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/models", timeout=2)


def test_running_server_reports_a_broken_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    started = time.perf_counter()
    with pytest.raises(StageError, match="exited with code"):
        with running_server(tmp_path, log_file=tmp_path / "log"):
            pass
    assert time.perf_counter() - started < 120
    with pytest.raises(StageError, match="adapter folder not found"):
        with running_server(tmp_path, adapter_dir=tmp_path / "missing"):
            pass


# ------------------------------------------------------------------------------------------- hardening (#12)
def body(**fields) -> str:
    """A valid request with `fields` replaced (None-valued `...` drops a field); json.dumps writes NaN/Infinity
    as Python's json does, which is what a careless client sends."""
    out = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    out.update(fields)
    return json.dumps({k: v for k, v in out.items() if v is not ...})


BAD = {  # id: (body, the param the error must name)
    "max_tokens=Infinity": (body(max_tokens=float("inf")), "max_tokens"),
    "max_tokens=-1": (body(max_tokens=-1), "max_tokens"),
    "max_tokens=0": (body(max_tokens=0), "max_tokens"),
    "max_tokens=1e6 (past context)": (body(max_tokens=10**6), "max_tokens"),
    "max_tokens=2**63": (body(max_tokens=2**63), "max_tokens"),
    "max_tokens=1.5": (body(max_tokens=1.5), "max_tokens"),
    'max_tokens="5"': (body(max_tokens="5"), "max_tokens"),
    "max_completion_tokens=0": (body(max_completion_tokens=0), "max_completion_tokens"),
    "temperature=NaN": (body(temperature=float("nan")), "temperature"),
    "temperature=Infinity": (body(temperature=float("inf")), "temperature"),
    "temperature=-0.1": (body(temperature=-0.1), "temperature"),
    "temperature=2.5": (body(temperature=2.5), "temperature"),
    'temperature="0.5"': (body(temperature="0.5"), "temperature"),
    "top_p=0": (body(top_p=0), "top_p"),
    "top_p=1.5": (body(top_p=1.5), "top_p"),
    "top_p=NaN": (body(top_p=float("nan")), "top_p"),
    "stop=5": (body(stop=5), "stop"),
    "stop=[1]": (body(stop=[1]), "stop"),
    "stop=5 strings": (body(stop=["a", "b", "c", "d", "e"]), "stop"),
    "stop=300 chars": (body(stop=["x" * 300]), "stop"),
    "stop={}": (body(stop={"a": 1}), "stop"),
    "seed=1e30": (body(seed=1e30), "seed"),
    "seed=2**63": (body(seed=2**63), "seed"),
    "seed=-2**63-1": (body(seed=-(2**63) - 1), "seed"),
    'seed="1"': (body(seed="1"), "seed"),
    "n=2": (body(n=2), "n"),
    "n=0": (body(n=0), "n"),
    "stream=true": (body(stream=True), "stream"),
    "messages=[]": (body(messages=[]), "messages"),
    'messages="hi"': (body(messages="hi"), "messages"),
    "messages missing": (body(messages=...), "messages"),
    "role=robot": (body(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
    "content=5": (body(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    "content missing": (body(messages=[{"role": "user"}]), "messages[0].content"),
    "content=image part": (
        body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]),
        "messages[0].content",
    ),
    "content=lone surrogate": (body(messages=[{"role": "user", "content": "\ud800"}]), "messages"),
    'logprobs="yes"': (body(logprobs="yes"), "logprobs"),
    "top_logprobs=21": (body(logprobs=True, top_logprobs=21), "top_logprobs"),
    "top_logprobs=-1": (body(logprobs=True, top_logprobs=-1), "top_logprobs"),
    "top_logprobs without logprobs": (body(top_logprobs=5), "top_logprobs"),
    "model missing": (body(model=...), "model"),
    "model=5": (body(model=5), "model"),
    "body=not JSON": ("{not json", None),
    "body=[[[... 100k deep": ("[" * 100_000, None),
    "body=a list": ("[1]", None),
}


@pytest.mark.parametrize("raw,param", list(BAD.values()), ids=list(BAD))
def test_bad_values_are_400_naming_the_field(server, raw, param):
    url, _ = server
    status, answer = post(url, raw)
    assert status == 400, answer
    err = answer["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["code"]
    assert set(err) == {"message", "type", "param", "code"}
    if param:
        assert err["message"].startswith(param.split("[")[0])


def test_fields_the_client_may_send_are_accepted(server):
    url, _ = server
    status, answer = post(
        url,
        body(
            stream=False,
            user="u-1",
            n=1,
            frequency_penalty=0,
            metadata={},
            stop=None,
            seed=-(2**63),
            max_completion_tokens=3,
            temperature=2,
            top_p=1,
            logprobs=False,
            messages=[
                {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": "hi", "name": "ops"},
            ],
        ),
    )
    assert status == 200, answer
    assert answer["usage"]["completion_tokens"] <= 3
    resp = client(url).chat.completions.create(
        model="tuned", messages=MESSAGES, max_tokens=2, user="u-1", stream=False, stop="\n", temperature=0
    )
    assert resp.choices[0].message.role == "assistant"
    with pytest.raises(openai.NotFoundError) as exc:  # unknown model: 404 naming the field
        client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert exc.value.body["param"] == "model" and exc.value.body["code"] == "model_not_found"


def _raw_request(url: str, declared_length: int | None, chunks: list[bytes] | None) -> tuple[int, dict]:
    """POST with a declared Content-Length and no body, or a chunked body (no Content-Length)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest("POST", parts.path + "/chat/completions")
        conn.putheader("Authorization", f"Bearer {KEY}")
        conn.putheader("Content-Type", "application/json")
        if declared_length is not None:
            conn.putheader("Content-Length", str(declared_length))
            conn.endheaders()  # the body is never sent: the server must answer from the header alone
        else:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for chunk in chunks:
                conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_body_limit_is_413_before_parsing_and_long_prompt_is_400(server):
    url, _ = server
    status, answer = _raw_request(url, 10**9, None)  # declared 1 GB: refused from the header alone
    assert status == 413 and answer["error"]["code"] == "request_too_large"
    assert str(DEFAULT_MAX_BODY) in answer["error"]["message"]
    # chunked, no Content-Length, and not even JSON: 413 (counted while reading), not 400 (parsed)
    status, answer = _raw_request(url, None, [b"x" * 65536] * 17)
    assert status == 413, answer
    status, answer = post(url, b"{" * (DEFAULT_MAX_BODY + 1))  # the client sends it all, then reads the 413
    assert status == 413
    with pytest.raises(openai.APIStatusError) as exc:  # the openai client sees the 413, not a broken pipe
        client(url).chat.completions.create(
            model="base", messages=[{"role": "user", "content": "x" * DEFAULT_MAX_BODY}]
        )
    assert exc.value.status_code == 413
    # under the limit but past the context: 400 with the prompt's token count and the limit
    status, answer = post(url, body(messages=[{"role": "user", "content": "word " * 3000}]))  # conftest: 1024
    assert status == 400 and answer["error"]["code"] == "context_length_exceeded"
    assert answer["error"]["param"] == "messages"
    assert "context is 1024 tokens" in answer["error"]["message"] and "the prompt has" in answer["error"]["message"]
    tokens = int(answer["error"]["message"].split("the prompt has ")[1].split()[0])
    assert tokens > 3000


def test_a_huge_prompt_does_not_stall_cheap_requests(server):
    """A ~1 MB prompt (under the body limit, far past the context) is tokenised in a worker thread: /health
    and /v1/models keep answering meanwhile. No absolute speed asserted: only latency relative to it."""
    url, _ = server
    raw = body(messages=[{"role": "user", "content": "word " * 199_000}])
    assert 990_000 < len(raw) < DEFAULT_MAX_BODY
    big: dict = {}

    def send_big():
        t0 = time.perf_counter()
        big["status"], big["answer"] = post(url, raw)
        big["start"], big["end"] = t0, time.perf_counter()

    thread = threading.Thread(target=send_big)
    thread.start()
    cheap = []  # (start, end) of each cheap request sent while the big one is in flight
    while thread.is_alive():
        t0 = time.perf_counter()
        for path in ("/health", "/v1/models"):
            req = urllib.request.Request(url[:-3] + path, headers={"Authorization": f"Bearer {KEY}"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                assert resp.status == 200
        cheap.append((t0, time.perf_counter()))
        time.sleep(0.02)
    thread.join()
    assert big["status"] == 400 and big["answer"]["error"]["code"] == "context_length_exceeded"
    took = big["end"] - big["start"]
    assert took > 0.3, f"the big request took {took:.2f} s: too quick for this test to tell anything"
    during = [end - start for start, end in cheap if end < big["end"]]
    assert len(during) >= 3, (took, cheap)  # blocked, the loop would answer nothing until the big one is done
    assert max(end - start for start, end in cheap) < took / 3, (took, cheap)


def test_api_key_required_on_v1_but_not_health(server):
    url, _ = server
    assert [m.id for m in client(url).models.list()]  # the right key works (every other test uses it too)
    with pytest.raises(openai.AuthenticationError) as exc:
        client(url, "sk-wrong").chat.completions.create(model="base", messages=MESSAGES, max_tokens=2)
    assert exc.value.body["code"] == "invalid_api_key" and exc.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError):
        client(url, KEY[:-1]).models.list()  # a prefix of the key is not the key
    for key in (None, KEY + "x"):
        status, answer = post(url, body(), key=key)
        assert status == 401 and set(answer["error"]) == {"message", "type", "param", "code"}
        assert KEY not in json.dumps(answer)
    status, answer = post(url, body(), key=KEY, path="/completions")  # not served: 404, same error shape
    assert status == 404 and "error" in answer
    with urllib.request.urlopen(url[:-3] + "/health", timeout=10) as resp:  # open: load balancers probe it
        assert resp.status == 200
