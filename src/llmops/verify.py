"""What deploy proves about a registered version before the alias moves, on one download into an empty folder:
it loads and answers a chat request in time (the smoke test), and it answers the held-out domain items as the
evaluated adapter did (the deploy check, llmops.deploy_check), recorded on the version (tags, card, description).

Run:  llmops deploy-check --model-uri models:/<name>@production   (check_registered: any version, this repo's eval)
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from llmops import schemas
from llmops.artifacts import read_jsonl, write_text
from llmops.config import Params
from llmops.errors import StageError
from llmops.registry import download_version, load_version
from llmops.schemas import DeployCheck
from llmops.tracking import mlflow

SmokeTest = Callable[[Params, Path], dict]
Check = Callable[[Params, Path], DeployCheck]


def smoke_test(params: Params, version_dir: Path) -> dict:
    """Serve a downloaded registry version from its own folder (cwd = that folder's empty parent), send one
    chat request to "tuned", check the answer and latency."""
    from llmops.serve_client import running_server  # the judge's OpenAI-compatible server

    messages = [{"role": "user", "content": "Smoke test: answer in one word."}]
    if params.paths.prepared_eval.is_file():
        first = read_jsonl(params.paths.prepared_eval, strict=False)[:1]
        if first:
            messages = first[0][1].get("messages") or messages  # a prepared chat line (prepare validated it)
    body = json.dumps(
        {"model": "tuned", "messages": messages, "max_tokens": params.deploy.smoke_max_tokens, "temperature": 0}
    ).encode()
    version = load_version(version_dir)
    with contextlib.chdir(version_dir.parent), running_server(version, version.adapter_dir) as url:
        req = urllib.request.Request(
            f"{url}/chat/completions", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        start = time.perf_counter()
        with urllib.request.urlopen(req, timeout=max(params.deploy.smoke_max_latency_s * 2, 30)) as resp:
            answer = json.loads(resp.read())
            status = resp.status
        latency = time.perf_counter() - start
    # the server's JSON, read as plain data: a malformed answer is a failed smoke test, not an exception
    content = ((answer.get("choices") or [{}])[0].get("message") or {}).get("content")
    ok = status == 200 and isinstance(content, str) and latency <= params.deploy.smoke_max_latency_s
    return {
        "ok": ok,
        "latency_s": round(latency, 3),
        "status": status,
        "reason": "ok"
        if ok
        else f"status {status}, content {type(content).__name__}, latency {latency:.2f}s "
        f"(max {params.deploy.smoke_max_latency_s}s)",
        "answer": (content or "")[:200],
    }


def smoke_from_registry(ml, params: Params, uri: str, smoke: SmokeTest) -> dict:
    return from_registry(ml, params, uri, smoke, None)[0]


def from_registry(
    ml, params: Params, uri: str, smoke: SmokeTest, check: Check | None
) -> tuple[dict, DeployCheck | None]:
    """Download `uri` into an empty folder once; smoke-test it, then (if it answered) check it."""
    with tempfile.TemporaryDirectory(prefix="llmops-smoke-") as tmp:
        try:
            version_dir = download_version(ml, uri, Path(tmp))
            result = smoke(params, version_dir)
        except Exception as exc:  # noqa: BLE001 - any failure to load or serve is a failed smoke test
            return {"ok": False, "latency_s": None, "reason": f"{type(exc).__name__}: {exc}"}, None
        return result, (check(params, version_dir) if result["ok"] and check is not None else None)


def registry_check(params: Params, version_dir: Path) -> DeployCheck:
    """The deploy check on a downloaded version: its adapter on its bundled base, and its merged export if any."""
    from llmops import deploy_check

    version = load_version(version_dir)
    forms: list = [("adapter", version, version.adapter_dir)]
    if version.merged_dir is not None:
        forms.append(("merged", version.merged_dir, None))
    return deploy_check.run(params, forms)


def check_registered(params: Params, model_uri: str) -> DeployCheck:
    """`llmops deploy-check --model-uri ...`: the deploy check on any registered version, downloaded into an empty
    temporary folder, against this repo's eval_tuned answers."""
    with tempfile.TemporaryDirectory(prefix="llmops-check-") as tmp:
        try:
            version_dir = download_version(mlflow(), model_uri, Path(tmp))
        except Exception as exc:  # noqa: BLE001 - MLflow's errors for a bad URI, store or alias: one line
            raise StageError(f"{model_uri}: cannot download it ({type(exc).__name__}: {exc})") from None
        return registry_check(params, version_dir)


def record_check(client, params: Params, run_id: str, name: str, version: str, check: DeployCheck, card: str):
    """The check's result on the version: tags, the model card (the run's copies and reports/), the description."""
    from llmops.deploy_check import summary

    tags = {
        "deploy_check": "passed" if check.passed else "failed",
        "deploy_check_summary": summary(check)[:4000],
        "deploy_check_label_changes": str(sum(len(f.label_changes) for f in check.forms)),
        "deploy_check_max_logprob_diff": str(max((f.max_first_token_logprob_diff for f in check.forms), default=0)),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    write_text(params.paths.report("model_card.md"), card)
    client.log_artifact(run_id, str(params.paths.report(schemas.DEPLOY_CHECK)), "reports")
    client.log_artifact(run_id, str(params.paths.report("model_card.md")), "reports")
    with tempfile.TemporaryDirectory() as tmp:  # the card inside the version, as README.md where it was staged
        readme = Path(tmp) / "README.md"
        readme.write_text(card, encoding="utf-8")
        for where in ("model", "model/adapter", *(["model/merged"] if params.deploy.merged else [])):
            client.log_artifact(run_id, str(readme), where)
    client.update_model_version(name, version, description=card.split("\n---\n", 1)[-1][:5000])
