"""`llmops deploy` / `llmops rollback`: ship the gated adapter to the MLflow model registry, or step back.

Run:  llmops deploy     (needs reports/gate.json: verdict pass, exit 0, for this exact adapter)
      llmops rollback   (moves the alias back to the version that held it before the last deploy)
Store: MLFLOW_TRACKING_URI (a `mlflow server`, Databricks, ...) or the repository's sqlite:///mlflow.db.

deploy:
  1. refuses unless reports/gate.json passed for sha256_tree(models/adapter) (the gate is the only door);
  2. writes a Hugging Face model card (YAML metadata, model-index with the eval metrics, data, params,
     lineage, limitations) into the registered copy of the adapter, where peft's placeholder README was,
     and to reports/model_card.md. models/adapter itself is not touched: it is train's DVC output and its
     content hash is what the gate and the evals vouch for;
  3. logs the adapter + card + the metrics files as one MLflow run and registers a new model version
     tagged with git sha, params hash, data hash, adapter sha, base model identity and gate verdict;
  4. smoke test: serves the registered artifact (llmops.serve.running_server), one chat request to
     "tuned", latency <= deploy.smoke_max_latency_s; only then moves the alias (deploy.alias). A failed
     smoke test leaves the alias where it was and exits non-zero.
The previous alias holder is kept as the new version's tag `previous_version` and alias `previous-<alias>`:
rollback follows that chain one step per call.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from llmops.artifacts import read_json, sha256_file, sha256_tree, write_text
from llmops.config import PARAMS_FILE, Params
from llmops.errors import StageError
from llmops.tracking import mlflow

PREVIOUS_TAG = "previous_version"
SmokeTest = Callable[[Params, Path], dict]


def check_gate(params: Params) -> dict:
    """The passing gate report for the current adapter, or StageError saying why deploy refuses."""
    path, adapter = params.paths.report("gate.json"), params.paths.adapter_dir
    if not path.is_file():
        raise StageError(f"{path}: missing; run `llmops gate` first (deploy ships only a gated adapter)")
    try:
        gate = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StageError(f"{path}: not valid JSON ({exc}); refusing to deploy") from None
    if not isinstance(gate, dict) or gate.get("verdict") != "pass" or gate.get("exit_code") != 0:
        verdict = gate.get("verdict") if isinstance(gate, dict) else None
        raise StageError(f"{path}: verdict {verdict!r} (exit_code {gate.get('exit_code') if isinstance(gate, dict) else None}), "
                         f"not a pass; refusing to deploy")
    if not adapter.is_dir():
        raise StageError(f"{adapter}: adapter folder missing; refusing to deploy")
    current = sha256_tree(adapter)
    if gate.get("adapter_sha256") != current:
        raise StageError(f"{path}: gated adapter {str(gate.get('adapter_sha256'))[:12]} is not the current adapter "
                         f"{current[:12]} (gate older than the adapter); rerun the gate; refusing to deploy")
    return gate


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _optional_json(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError):
        return None


def lineage(params: Params) -> dict[str, Any]:
    """Where this adapter came from: code, params, data, base model and DVC's own output hashes."""
    paths = params.paths
    identity = _optional_json(paths.base_identity) or {}
    lock = {}
    if Path("dvc.lock").is_file():
        stages = (yaml.safe_load(Path("dvc.lock").read_text()) or {}).get("stages", {})
        lock = {o["path"]: o.get("md5") for s in stages.values() for o in s.get("outs", []) if "path" in o}
    status = _git("status", "--porcelain")
    return {
        "git_sha": _git("rev-parse", "HEAD") or "unknown",
        "git_dirty": None if status is None else bool(status),
        "params_sha256": sha256_file(PARAMS_FILE) if PARAMS_FILE.is_file() else "unknown",
        "data_sha256": sha256_tree(paths.prepared_dir) if paths.prepared_dir.is_dir() else "unknown",
        "adapter_sha256": sha256_tree(paths.adapter_dir),
        "base_model": identity.get("model", "unknown"),
        "base_revision": identity.get("revision"),
        "base_weights_sha256": identity.get("weights_sha256") or identity.get("config_sha256"),
        "base_identity": identity,
        "dvc_outs_md5": lock,
    }


def model_card(params: Params, lin: dict, gate: dict) -> str:
    """A Hugging Face model card: YAML metadata (incl. model-index) + the sections a reviewer needs."""
    reports = params.paths.reports
    compare = _optional_json(reports / "eval_compare.json") or {}
    data = _optional_json(reports / "data.json") or {}
    judge = _optional_json(reports / "judge.json") or {}
    tasks = compare.get("tasks") or {}
    results = []
    for name, t in tasks.items():
        metrics = [{"type": t.get("metric", "score"), "name": f"{t.get('metric', 'score')} ({side})",
                    "value": t.get(side)} for side in ("tuned", "base") if isinstance(t.get(side), (int, float))]
        results.append({"task": {"type": "text-generation"},
                        "dataset": {"name": name, "type": name, "split": "test"}, "metrics": metrics})
    base = lin["base_model"]
    meta = {
        "base_model": base if base != "tiny" else None,  # the demo's tiny base is built locally, not on the hub
        "library_name": "peft",
        "pipeline_tag": "text-generation",
        "tags": ["lora", "peft", "llmops", f"gate-{gate.get('verdict')}"],
        "datasets": [str(params.paths.raw_train), str(params.paths.raw_eval)],
        "model-index": [{"name": params.deploy.registry_name, "results": results}],
    }
    meta = {k: v for k, v in meta.items() if v is not None}
    rows = "\n".join(f"| {n} | {t.get('kind')} | {t.get('metric')} | {t.get('n')} | {t.get('base')} | {t.get('tuned')} "
                     f"| {t.get('delta_ci')} | {t.get('ratio')} |" for n, t in tasks.items())
    judged = "\n".join(f"- {r}: tuned mean {(v.get('tuned') or {}).get('mean')} (base {(v.get('base') or {}).get('mean')})"
                       for r, v in (judge.get("rubrics") or {}).items()) or "- not available"
    train = params.train.model_dump(mode="json")
    split = lambda s: (data.get(s) or {}).get("final")  # noqa: E731
    return "\n".join([
        "---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "",
        f"# {params.deploy.registry_name}", "",
        f"A LoRA adapter (peft) for `{base}`"
        + (" (the demo's tiny Llama-architecture model, built and pretrained locally)" if base == "tiny" else "")
        + ", fine-tuned by the llmops pipeline and shipped because its quality gate passed.", "",
        "## Data", "",
        f"Training data `{params.paths.raw_train}` ({split('train')} examples after validation), held-out "
        f"evaluation `{params.paths.raw_eval}` ({split('eval')} examples); labels: {', '.join(data.get('labels') or [])}. "
        f"Prepared data sha256 `{lin['data_sha256']}`.", "",
        "## Training parameters", "", "```yaml", yaml.safe_dump({"train": train}, sort_keys=False).rstrip(), "```", "",
        "## Evaluation", "",
        "| task | kind | metric | n | base | tuned | delta 95% CI | ratio |", "|---|---|---|---|---|---|---|---|",
        rows or "| not available | | | | | | | |", "", "LLM judge:", judged, "",
        f"Gate verdict: **{gate.get('verdict')}** ({len(gate.get('rules', []))} rules; see `gate.json` logged with this version).", "",
        "## Lineage", "",
        f"- git commit: `{lin['git_sha']}`" + (" (working tree had uncommitted changes)" if lin["git_dirty"] else ""),
        f"- params.yaml sha256: `{lin['params_sha256']}`",
        f"- adapter sha256 (llmops sha256_tree): `{lin['adapter_sha256']}`",
        f"- base model: `{base}` revision `{lin['base_revision']}` weights/config sha256 `{lin['base_weights_sha256']}`",
        *[f"- DVC out `{p}`: md5 `{m}`" for p, m in lin["dvc_outs_md5"].items()], "",
        "## Limitations", "",
        "- Evaluated only on the held-out split of the same domain data and the regression tasks listed above; "
        "scores on other inputs are unknown.",
        "- Forgetting is checked on a few general tasks only; the gate's thresholds bound the measured loss, not all loss.",
        "- LLM-judge scores are advisory unless the judge was calibrated against human labels (see `judge.json`).",
        "- The demo base model is tiny (~0.2M parameters): its outputs demonstrate the pipeline, not a useful assistant."
        if base == "tiny" else "- Inherits the base model's licence, biases and limitations.",
        "", "## Usage", "", "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        f"base = AutoModelForCausalLM.from_pretrained({(base if base != 'tiny' else 'path/to/models/base')!r})",
        "model = PeftModel.from_pretrained(base, 'path/to/this/adapter')", "```", ""])


def smoke_test(params: Params, adapter_dir: Path) -> dict:
    """Serve the adapter (llmops.serve), send one chat request to "tuned", check the answer and latency."""
    from llmops.serve import running_server  # the judge's OpenAI-compatible server

    messages = [{"role": "user", "content": "Smoke test: a fiber cut isolated site B18."}]
    if params.paths.prepared_eval.is_file():
        first = params.paths.prepared_eval.read_text(encoding="utf-8").splitlines()[:1]
        if first:
            messages = json.loads(first[0]).get("messages") or messages
    body = json.dumps({"model": "tuned", "messages": messages, "max_tokens": params.deploy.smoke_max_tokens,
                       "temperature": 0}).encode()
    with running_server(params.paths, adapter_dir) as url:
        req = urllib.request.Request(f"{url}/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        with urllib.request.urlopen(req, timeout=max(params.deploy.smoke_max_latency_s * 2, 30)) as resp:
            answer = json.loads(resp.read())
            status = resp.status
        latency = time.perf_counter() - start
    content = ((answer.get("choices") or [{}])[0].get("message") or {}).get("content")
    ok = status == 200 and isinstance(content, str) and latency <= params.deploy.smoke_max_latency_s
    return {"ok": ok, "latency_s": round(latency, 3), "status": status,
            "reason": "ok" if ok else f"status {status}, content {type(content).__name__}, latency {latency:.2f}s "
                                       f"(max {params.deploy.smoke_max_latency_s}s)",
            "answer": (content or "")[:200]}


def _stage_adapter(params: Params, card: str, dest: Path) -> Path:
    """A copy of the adapter with the model card as its README.md (replacing peft's placeholder)."""
    staged = dest / "adapter"
    shutil.copytree(params.paths.adapter_dir, staged)
    (staged / "README.md").write_text(card, encoding="utf-8")
    return staged


def run(params: Params, smoke: SmokeTest | None = None) -> dict:
    gate = check_gate(params)
    smoke = smoke or smoke_test
    lin = lineage(params)
    card = model_card(params, lin, gate)
    write_text(params.paths.report("model_card.md"), card)
    name, alias = params.deploy.registry_name, params.deploy.alias
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # CI logs, not a terminal
    ml = mlflow()
    client = ml.MlflowClient()
    experiment = client.get_experiment_by_name(params.train.mlflow_experiment)
    exp_id = experiment.experiment_id if experiment else client.create_experiment(params.train.mlflow_experiment)
    tags = {"git_sha": lin["git_sha"], "params_sha256": lin["params_sha256"], "data_sha256": lin["data_sha256"],
            "adapter_sha256": lin["adapter_sha256"], "base_model": lin["base_model"],
            "base_revision": str(lin["base_revision"]), "base_weights_sha256": str(lin["base_weights_sha256"]),
            "gate_verdict": gate["verdict"]}
    run_ = client.create_run(exp_id, run_name=f"deploy-{lin['adapter_sha256'][:12]}", tags={"llmops.stage": "deploy", **tags})
    run_id = run_.info.run_id
    try:
        with tempfile.TemporaryDirectory() as tmp:
            staged = _stage_adapter(params, card, Path(tmp))
            client.log_artifacts(run_id, str(staged), "adapter")
            for report in ("gate.json", "eval_compare.json", "judge.json", "data.json", "model_card.md"):
                if params.paths.report(report).is_file():
                    client.log_artifact(run_id, str(params.paths.report(report)), "reports")
            client.log_dict(run_id, lin, "lineage.json")
        try:
            client.get_registered_model(name)
        except Exception:  # noqa: BLE001 - MlflowException RESOURCE_DOES_NOT_EXIST
            client.create_registered_model(name, description="LoRA adapters shipped by llmops deploy (gated).")
        try:
            previous = str(client.get_model_version_by_alias(name, alias).version)
        except Exception:  # noqa: BLE001 - no version holds the alias yet
            previous = None
        version = str(client.create_model_version(
            name, source=f"runs:/{run_id}/adapter", run_id=run_id, description=card.split("\n---\n", 1)[-1][:5000],
            tags={**tags, **({PREVIOUS_TAG: previous} if previous else {})}).version)
        with tempfile.TemporaryDirectory() as tmp:
            # Smoke-test what the registry now serves, not the local folder: catches a broken upload too.
            served = Path(ml.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=tmp))
            try:
                result = smoke(params, served)
            except Exception as exc:  # noqa: BLE001 - any failure to serve is a failed smoke test
                result = {"ok": False, "latency_s": None, "reason": f"{type(exc).__name__}: {exc}"}
        client.set_model_version_tag(name, version, "smoke_test", "passed" if result["ok"] else "failed")
        if result.get("latency_s") is not None:
            client.set_model_version_tag(name, version, "smoke_latency_s", str(result["latency_s"]))
            client.log_metric(run_id, "smoke_latency_s", float(result["latency_s"]))
        if not result["ok"]:
            client.set_terminated(run_id, "FAILED")
            raise StageError(f"smoke test of {name} version {version} failed ({result['reason']}); "
                             f"alias {alias!r} left on version {previous}")
        client.set_registered_model_alias(name, alias, version)
        if previous:
            client.set_registered_model_alias(name, f"previous-{alias}", previous)
        client.set_terminated(run_id, "FINISHED")
    except StageError:
        raise
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    return {"registered_model": name, "version": version, "alias": alias, "previous_version": previous,
            "run_id": run_id, "smoke_test": result, "tracking_uri": ml.get_tracking_uri(), **tags}


def rollback(params: Params) -> dict:
    """Move the alias to the version that held it before the current one (one step back per call)."""
    name, alias = params.deploy.registry_name, params.deploy.alias
    client = mlflow().MlflowClient()
    try:
        current = client.get_model_version_by_alias(name, alias)
    except Exception:  # noqa: BLE001
        raise StageError(f"registered model {name!r} has no version with alias {alias!r}; nothing to roll back") from None
    previous = current.tags.get(PREVIOUS_TAG)
    if not previous:
        raise StageError(f"{name} version {current.version} (alias {alias!r}) was the first deployment; "
                         f"no previous version to roll back to")
    client.set_registered_model_alias(name, alias, previous)
    client.set_model_version_tag(name, current.version, "rolled_back", "true")
    older = client.get_model_version(name, previous).tags.get(PREVIOUS_TAG)
    if older:
        client.set_registered_model_alias(name, f"previous-{alias}", older)
    else:
        try:
            client.delete_registered_model_alias(name, f"previous-{alias}")
        except Exception:  # noqa: BLE001 - it was never set
            pass
    return {"registered_model": name, "alias": alias, "from_version": str(current.version), "to_version": previous}
