"""The project's OpenAI-compatible server (llmops.serve) with the tiny model and a trained adapter, spoken to
by the real openai client over 127.0.0.1: model ids, greedy chat, logprobs/top_logprobs, stop, usage,
errors, no secrets in its log, and running_server always stopping its subprocess.

Run:  pytest tests/test_serve.py        (~1 min: builds the tiny base, trains 8 LoRA steps, serves it)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request

import openai
import pytest

from llmops.errors import StageError
from llmops.serve import running_server

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "system", "content": "Triage the telecom incident. Reply with the category and the next action."},
            {"role": "user", "content": "Alert at 10:15: the MME pool rejects attach requests."}]


@pytest.fixture(scope="module")
def tuned(tiny_workdir, tmp_path_factory):
    """(params, workdir) for tiny_workdir plus a trained adapter."""
    from llmops import train
    from llmops.config import load_params

    work = tmp_path_factory.mktemp("serve") / "work"
    shutil.copytree(tiny_workdir, work)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        params = load_params()
        train.run(params)
    finally:
        os.chdir(cwd)
    return work


@pytest.fixture(scope="module")
def server(tuned):
    """One running server for the module (startup is the slow part), paths made absolute."""
    from llmops.config import load_params

    cwd = os.getcwd()
    os.chdir(tuned)
    try:
        paths = load_params().paths
    finally:
        os.chdir(cwd)
    base, adapter = tuned / paths.base_dir, tuned / paths.adapter_dir
    with running_server(base, adapter) as url:
        yield url, base


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)


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
        resp = c.chat.completions.create(model=model, messages=MESSAGES, max_tokens=12, temperature=0, seed=0,
                                         logprobs=True, top_logprobs=5)
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

    sampled = [c.chat.completions.create(model="tuned", messages=MESSAGES, max_tokens=10, temperature=1.5,
                                         seed=seed).choices[0].message.content for seed in (1, 1, 2, 3, 4)]
    assert sampled[0] == sampled[1]  # same seed, same sample
    assert len(set(sampled)) > 1

    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="base", messages=MESSAGES, max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="context"):
        c.chat.completions.create(model="base", messages=[{"role": "user", "content": "word " * 5000}])


def test_access_log_never_shows_the_key_or_body(server, tmp_path):
    """`llmops serve`'s access log (on by default) prints method, path and status only."""
    _, base = server
    log = tmp_path / "serve.log"
    port_file = tmp_path / "port"
    secret = "sk-secret-in-header-1234"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "llmops.serve", "--model", str(base), "--port", "0",
                                 "--port-file", str(port_file)], stdout=fh, stderr=fh)
    try:
        for _ in range(600):
            if port_file.is_file():
                break
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port_file.read_text()}/v1"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/models", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        resp = openai.OpenAI(base_url=url, api_key=secret).chat.completions.create(
            model="base", messages=[{"role": "user", "content": f"my key is {secret}"}], max_tokens=2)
        assert resp.choices[0].message.content is not None
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    text = log.read_text()
    assert "POST /v1/chat/completions" in text and "200" in text
    assert secret not in text


def test_running_server_stops_even_on_error(tuned):
    base = tuned / "models/base"
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
