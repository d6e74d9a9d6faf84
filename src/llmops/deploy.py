"""`llmops deploy` / `llmops rollback`: ship the gated adapter to the MLflow model registry, or step back.

Run:  llmops deploy                 (re-evaluates the gate rules from reports/*.json for the current adapter)
      llmops deploy --version 3     (redeploy: point the alias at an earlier, smoke-tested, gated version)
      llmops rollback               (moves the alias back to the version that held it before the last deploy)
Store: MLFLOW_TRACKING_URI (a `mlflow server`, Databricks, ...) or params `tracking.uri`. Deploy refuses to run
without one, and under GitHub Actions refuses a store on the runner's disk (sqlite:, file:): it is thrown away.

deploy:
  1. re-evaluates the gate rules (gate.evaluate) from the metrics for sha256_tree(models/adapter): a
     hand-written reports/gate.json cannot make a failing model pass;
  2. writes a Hugging Face model card (YAML metadata, model-index with the eval metrics, data, params,
     lineage, limitations) into the registered copy, and to reports/model_card.md. models/adapter itself is
     not touched: it is train's DVC output and its content hash is what the gate and the evals vouch for;
  3. registers a self-sufficient version (one MLflow run artifact folder `model/`):
       adapter/              the LoRA adapter; adapter_config.json names the base as below
       base/identity.json    the base's identity (hub id + pinned revision, or the built/local base's hashes)
       base/*                for a built (tiny) or local base: the weights and tokenizer themselves
       llmops_model.json     manifest: what loads the version (see `load_version`)
     tagged with git sha, params hash, data hash, adapter sha, base model identity and gate verdict;
  4. smoke test: alias `candidate` -> the new version; `models:/<name>@candidate` is downloaded into an empty
     folder and served from there (no repo files), one chat request to "tuned", latency <=
     deploy.smoke_max_latency_s; only then does deploy.alias move. A failed smoke test leaves the alias
     where it was and exits non-zero.
The previous alias holder is kept as the new version's tag `previous_version` and alias `previous-<alias>`:
rollback follows that chain one step per call.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import yaml

from llmops import schemas
from llmops.artifacts import md_table, read_json, read_jsonl, sha256_file, sha256_tree, write_text
from llmops.config import PARAMS_FILE, Params
from llmops.errors import StageError
from llmops.schemas import DataStats, EvalComparison, GateReport, JudgeReport, Model, Verdict
from llmops.tracking import mlflow

PREVIOUS_TAG = "previous_version"
CANDIDATE = "candidate"  # the alias the smoke test loads before deploy.alias moves
MANIFEST = "llmops_model.json"
SmokeTest = Callable[[Params, Path], dict]


def require_tracking_uri(params: Params) -> str:
    """The registry's URI, or StageError: never a throwaway default store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
    if not uri:
        raise StageError(
            "no MLflow tracking URI: set MLFLOW_TRACKING_URI (in CI: the `production` environment's "
            "secret) or params.yaml tracking.uri; deploy never registers into a default local store"
        )
    scheme = urlparse(uri).scheme
    if os.environ.get("GITHUB_ACTIONS") == "true" and scheme in ("", "file", "sqlite"):
        raise StageError(
            f"MLFLOW_TRACKING_URI is a {scheme or 'file'} store on the runner's disk, deleted when the "
            f"job ends; set the `production` environment's MLFLOW_TRACKING_URI secret to a "
            f"`mlflow server` or Databricks URL"
        )
    return uri


def check_gate(params: Params) -> GateReport:
    """The gate rules, re-evaluated here from the metrics for the current adapter; StageError unless they pass.

    reports/gate.json is only compared, never trusted: it is a file anyone can write."""
    from llmops import gate as gate_mod

    adapter = params.paths.adapter_dir
    if not adapter.is_dir():
        raise StageError(f"{adapter}: adapter folder missing; refusing to deploy")
    fresh = gate_mod.evaluate(params)
    recorded = _report(params, schemas.GATE, GateReport)
    said = recorded.verdict if recorded is not None else None
    if fresh.verdict is not Verdict.passed or fresh.exit_code != 0:
        failed = [str(r.reason or r.rule) for r in fresh.rules if r.binding and not r.passed]
        why = "; ".join([*fresh.errors, *failed][:5])
        raise StageError(
            f"gate rules re-evaluated from the metrics: verdict {fresh.verdict.value!r} "
            f"(exit_code {fresh.exit_code})"
            + (f": {why}" if why else "")
            + (f"; reports/gate.json says {said.value!r}" if said is not None and said != fresh.verdict else "")
            + "; refusing to deploy"
        )
    current = sha256_tree(adapter)
    if fresh.adapter_sha256 not in (None, current):
        raise StageError(
            f"gate evaluated adapter {fresh.adapter_sha256[:12]}, not the current adapter {current[:12]}; "
            "refusing to deploy"
        )
    return fresh


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _report(params: Params, name: str, model: type[Model]) -> Model | None:
    """A report validated against its contract; None when missing. One that breaks its contract stops the deploy."""
    path = params.paths.report(name)
    return schemas.read(path, model) if path.is_file() else None


def _base_identity(path: Path) -> dict[str, Any]:
    """paths.base_dir/identity.json, or {} when missing or unreadable. No contract: its keys depend on where the
    base came from (built, local folder, hub), and llmops.model reads it as plain JSON too."""
    try:
        return read_json(path) or {}
    except (OSError, json.JSONDecodeError):
        return {}


def lineage(params: Params) -> dict[str, Any]:
    """Where this adapter came from: code, params, data, base model and DVC's own output hashes."""
    paths = params.paths
    identity = _base_identity(paths.base_identity)
    lock = {}
    if Path("dvc.lock").is_file():  # DVC's own file format, read as plain YAML
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


def model_card(params: Params, lin: dict, gate: GateReport) -> str:
    """A Hugging Face model card: YAML metadata (incl. model-index) + the sections a reviewer needs."""
    compare = _report(params, schemas.EVAL_COMPARE, EvalComparison)
    data = _report(params, schemas.DATA, DataStats)
    judge = _report(params, schemas.JUDGE, JudgeReport)
    tasks = compare.tasks if compare is not None else {}
    results = []
    for name, t in tasks.items():
        metrics = [
            {"type": t.metric, "name": f"{t.metric} ({side})", "value": value}
            for side, value in (("tuned", t.tuned), ("base", t.base))
        ]
        results.append(
            {
                "task": {"type": "text-generation"},
                "dataset": {"name": name, "type": name, "split": "test"},
                "metrics": metrics,
            }
        )
    base = lin["base_model"]
    meta = {
        "base_model": base if base != "tiny" else None,  # the demo's tiny base is built locally, not on the hub
        "library_name": "peft",
        "pipeline_tag": "text-generation",
        "tags": ["lora", "peft", "llmops", f"gate-{gate.verdict}"],
        "datasets": [str(params.paths.raw_train), str(params.paths.raw_eval)],
        "model-index": [{"name": params.deploy.registry_name, "results": results}],
    }
    meta = {k: v for k, v in meta.items() if v is not None}
    table = md_table(
        ["task", "kind", "metric", "n", "base", "tuned", "delta 95% CI", "ratio"],
        [[n, t.kind, t.metric, t.n, t.base, t.tuned, t.delta_ci, t.ratio] for n, t in tasks.items()]
        or [["not available", "", "", "", "", "", "", ""]],
    )
    judged = (
        "\n".join(
            f"- {r}: tuned mean {v.tuned.mean} (base {v.base.mean})"
            for r, v in (judge.rubrics if judge is not None else {}).items()
        )
        or "- not available"
    )
    train = params.train.model_dump(mode="json")
    n_train, n_eval, labels = (data.train.final, data.eval.final, data.labels) if data is not None else (None, None, [])
    return "\n".join(
        [
            "---",
            yaml.safe_dump(meta, sort_keys=False).rstrip(),
            "---",
            "",
            f"# {params.deploy.registry_name}",
            "",
            f"A LoRA adapter (peft) for `{base}`"
            + (" (the demo's tiny Llama-architecture model, built and pretrained locally)" if base == "tiny" else "")
            + ", fine-tuned by the llmops pipeline and shipped because its quality gate passed.",
            "",
            "## Data",
            "",
            f"Training data `{params.paths.raw_train}` ({n_train} examples after validation), held-out "
            f"evaluation `{params.paths.raw_eval}` ({n_eval} examples); labels: {', '.join(labels)}. "
            f"Prepared data sha256 `{lin['data_sha256']}`.",
            "",
            "## Training parameters",
            "",
            "```yaml",
            yaml.safe_dump({"train": train}, sort_keys=False).rstrip(),
            "```",
            "",
            "## Evaluation",
            "",
            table,
            "",
            "LLM judge:",
            judged,
            "",
            f"Gate verdict: **{gate.verdict}** ({len(gate.rules)} rules; see `gate.json` logged with this version).",
            "",
            "## Lineage",
            "",
            f"- git commit: `{lin['git_sha']}`"
            + (" (working tree had uncommitted changes)" if lin["git_dirty"] else ""),
            f"- params.yaml sha256: `{lin['params_sha256']}`",
            f"- adapter sha256 (llmops sha256_tree): `{lin['adapter_sha256']}`",
            f"- base model: `{base}` revision `{lin['base_revision']}` weights/config sha256 `{lin['base_weights_sha256']}`",
            *[f"- DVC out `{p}`: md5 `{m}`" for p, m in lin["dvc_outs_md5"].items()],
            "",
            "## Limitations",
            "",
            "- Evaluated only on the held-out split of the same domain data and the regression tasks listed above; "
            "scores on other inputs are unknown.",
            "- Forgetting is checked on a few general tasks only; the gate's thresholds bound the measured loss, not all loss.",
            "- LLM-judge scores are advisory unless the judge was calibrated against human labels (see `judge.json`).",
            "- The demo base model is tiny (~0.2M parameters): its outputs demonstrate the pipeline, not a useful assistant."
            if base == "tiny"
            else "- Inherits the base model's licence, biases and limitations.",
            "",
            "## Usage",
            "",
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM",
            f"base = AutoModelForCausalLM.from_pretrained({(base if base != 'tiny' else 'base')!r})  # in the version folder",
            "model = PeftModel.from_pretrained(base, 'adapter')",
            "```",
            "",
        ]
    )


def load_version(version_dir: Path) -> SimpleNamespace:
    """What a downloaded registry version serves from: base (path or hub id + revision) and the adapter.

    Needs nothing but the folder (and, for a hub base, the hub or its cache): no repo, no params.yaml."""
    manifest = read_json(version_dir / MANIFEST)
    base_dir = version_dir / manifest["base"]["dir"]
    return SimpleNamespace(
        base_identity=base_dir / "identity.json",
        base_dir=base_dir,
        adapter_dir=version_dir / manifest["adapter"]["dir"],
        manifest=manifest,
    )


def smoke_test(params: Params, version_dir: Path) -> dict:
    """Serve a downloaded registry version from its own folder (cwd = that folder's empty parent), send one
    chat request to "tuned", check the answer and latency."""
    from llmops.serve import running_server  # the judge's OpenAI-compatible server

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


def _stage_version(params: Params, card: str, dest: Path) -> Path:
    """The registered folder: adapter (card as README.md, config naming the base), base, manifest."""
    root = dest / "model"
    staged = root / "adapter"
    shutil.copytree(params.paths.adapter_dir, staged)
    (staged / "README.md").write_text(card, encoding="utf-8")
    (root / "README.md").write_text(card, encoding="utf-8")
    identity = read_json(params.paths.base_identity)  # plain JSON: keys depend on the source (see _base_identity)
    base = root / "base"
    if identity.get("source") == "hub":  # the hub pins it: id + commit, no weights copied
        base.mkdir(parents=True)
        base_entry = {"dir": "base", "source": "hub", "id": identity["path"], "revision": identity.get("revision")}
        base_ref, revision = identity["path"], identity.get("revision")
    else:  # built (tiny), converted (GGUF) or a local folder: the weights travel with the version, hashed
        src = params.paths.base_dir if identity.get("source") in ("built", "gguf") else Path(identity["path"])
        shutil.copytree(src, base, ignore=shutil.ignore_patterns("identity.json"))
        identity = {**identity, "source": "built", "path": "base"}  # served from the version's own folder
        base_entry = {"dir": "base", "source": "bundled"}
        base_ref, revision = "base", None
    (base / "identity.json").write_text(json.dumps(identity, indent=2, sort_keys=True), encoding="utf-8")
    if base_entry["source"] == "bundled":  # what a download must hash to (identity.json included)
        base_entry["sha256"] = sha256_tree(base)
    config_path = staged / "adapter_config.json"
    if config_path.is_file():  # peft reads the base from here (AutoPeftModel): a repo path means nothing elsewhere
        config = json.loads(config_path.read_text())
        config.update(base_model_name_or_path=base_ref, revision=revision)
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    manifest = {
        "format": 1,
        "adapter": {"dir": "adapter", "sha256_gated": sha256_tree(params.paths.adapter_dir)},
        "base": base_entry,
        "load": "cd <this folder>; base = AutoModelForCausalLM.from_pretrained(base id or 'base', revision=...);"
        " PeftModel.from_pretrained(base, 'adapter')  (or llmops.deploy.load_version)",
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    return root


def download_version(ml, uri: str, empty: Path) -> Path:
    """`models:/...` into an empty folder; the folder that holds the manifest."""
    got = Path(ml.artifacts.download_artifacts(uri, dst_path=str(empty)))
    return got if (got / MANIFEST).is_file() else next(p.parent for p in got.rglob(MANIFEST))


def serve_registered(model_uri: str, host: str, port: int, max_body_bytes: int | None = None) -> None:
    """`llmops serve --model-uri models:/<name>@<alias>`: a registered version served from any folder, with no
    repository and no params.yaml (the tracking URI from MLFLOW_TRACKING_URI): downloaded into a temporary
    folder, its bundled (or hub-pinned) base as "base" and its adapter as "tuned", removed when the server stops."""
    from llmops.model import model_reference
    from llmops.serve import max_body_default, serve_forever

    with tempfile.TemporaryDirectory(prefix="llmops-version-") as tmp:
        try:
            version = load_version(download_version(mlflow(), model_uri, Path(tmp)))
        except Exception as exc:  # noqa: BLE001 - MLflow's errors for a bad URI, store or alias: one line
            raise StageError(f"{model_uri}: cannot download it ({type(exc).__name__}: {exc})") from None
        base_ref, revision = model_reference(version)
        serve_forever(
            base_ref, revision, version.adapter_dir, host, port, max_body_bytes=max_body_bytes or max_body_default()
        )


def _smoke_from_registry(ml, params: Params, uri: str, smoke: SmokeTest) -> dict:
    with tempfile.TemporaryDirectory(prefix="llmops-smoke-") as tmp:
        try:
            return smoke(params, download_version(ml, uri, Path(tmp)))
        except Exception as exc:  # noqa: BLE001 - any failure to load or serve is a failed smoke test
            return {"ok": False, "latency_s": None, "reason": f"{type(exc).__name__}: {exc}"}


def _move_alias(client, name: str, alias: str, version: str, previous: str | None) -> None:
    client.set_registered_model_alias(name, alias, version)
    if previous and previous != version:
        client.set_registered_model_alias(name, f"previous-{alias}", previous)


def run(params: Params, smoke: SmokeTest | None = None) -> dict:
    require_tracking_uri(params)
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
    tags = {
        "git_sha": lin["git_sha"],
        "params_sha256": lin["params_sha256"],
        "data_sha256": lin["data_sha256"],
        "adapter_sha256": lin["adapter_sha256"],
        "base_model": lin["base_model"],
        "base_revision": str(lin["base_revision"]),
        "base_weights_sha256": str(lin["base_weights_sha256"]),
        "gate_verdict": gate.verdict.value,
    }
    run_ = client.create_run(
        exp_id, run_name=f"deploy-{lin['adapter_sha256'][:12]}", tags={"llmops.stage": "deploy", **tags}
    )
    run_id = run_.info.run_id
    try:
        with tempfile.TemporaryDirectory() as tmp:
            staged = _stage_version(params, card, Path(tmp))
            client.log_artifacts(run_id, str(staged), "model")
            write_text(Path(tmp) / "gate.json", json.dumps(gate.model_dump(mode="json"), indent=2, sort_keys=True))
            client.log_artifact(run_id, str(Path(tmp) / "gate.json"), "reports")  # the re-evaluated verdict
            for report in (schemas.EVAL_COMPARE, schemas.JUDGE, schemas.DATA, "model_card.md"):
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
        version = str(
            client.create_model_version(
                name,
                source=f"runs:/{run_id}/model",
                run_id=run_id,
                description=card.split("\n---\n", 1)[-1][:5000],
                tags={**tags, **({PREVIOUS_TAG: previous} if previous else {})},
            ).version
        )
        # Smoke-test what the registry now serves, by alias, in an empty folder: catches a broken upload, a
        # version that needs the repo, and a missing base.
        client.set_registered_model_alias(name, CANDIDATE, version)
        result = _smoke_from_registry(ml, params, f"models:/{name}@{CANDIDATE}", smoke)
        client.set_model_version_tag(name, version, "smoke_test", "passed" if result["ok"] else "failed")
        if result.get("latency_s") is not None:
            client.set_model_version_tag(name, version, "smoke_latency_s", str(result["latency_s"]))
            client.log_metric(run_id, "smoke_latency_s", float(result["latency_s"]))
        if not result["ok"]:
            client.set_terminated(run_id, "FAILED")
            raise StageError(
                f"smoke test of {name} version {version} failed ({result['reason']}); "
                f"alias {alias!r} left on version {previous}"
            )
        _move_alias(client, name, alias, version, previous)
        client.set_terminated(run_id, "FINISHED")
    except StageError:
        raise
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    return {
        "registered_model": name,
        "version": version,
        "alias": alias,
        "previous_version": previous,
        "run_id": run_id,
        "smoke_test": result,
        "tracking_uri_scheme": urlparse(ml.get_tracking_uri()).scheme,
        **tags,
    }


def redeploy(params: Params, version: str, smoke: SmokeTest | None = None) -> dict:
    """Point the alias at an earlier version (gated and smoke-tested when registered), after a new smoke test."""
    require_tracking_uri(params)
    name, alias = params.deploy.registry_name, params.deploy.alias
    ml = mlflow()
    client = ml.MlflowClient()
    try:
        mv = client.get_model_version(name, str(version))
    except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST
        raise StageError(
            f"registered model {name!r} has no version {version!r}; see the registry for versions"
        ) from None
    # MLflow tags: the registry's free-form str -> str map, as deploy wrote them
    if mv.tags.get("gate_verdict") != Verdict.passed or mv.tags.get("smoke_test") != "passed":
        raise StageError(
            f"{name} version {version}: gate {mv.tags.get('gate_verdict')!r}, smoke test "
            f"{mv.tags.get('smoke_test')!r}; only a gated, smoke-tested version is redeployed"
        )
    try:
        previous = str(client.get_model_version_by_alias(name, alias).version)
    except Exception:  # noqa: BLE001
        previous = None
    result = _smoke_from_registry(ml, params, f"models:/{name}/{version}", smoke or smoke_test)
    if not result["ok"]:
        raise StageError(
            f"smoke test of {name} version {version} failed ({result['reason']}); "
            f"alias {alias!r} left on version {previous}"
        )
    if previous and previous != str(version):
        client.set_model_version_tag(name, str(version), PREVIOUS_TAG, previous)  # rollback returns here
    _move_alias(client, name, alias, str(version), previous)
    return {
        "registered_model": name,
        "alias": alias,
        "version": str(version),
        "previous_version": previous,
        "smoke_test": result,
    }


def _alias_version(client, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:  # noqa: BLE001 - MLflow raises a bare MlflowException for an unset alias
        return None


def rollback(params: Params) -> dict:
    """Move the alias to the version that held it before the current one (one step back per call)."""
    require_tracking_uri(params)
    name, alias = params.deploy.registry_name, params.deploy.alias
    client = mlflow().MlflowClient()
    try:
        current = client.get_model_version_by_alias(name, alias)
    except Exception:  # noqa: BLE001
        raise StageError(
            f"registered model {name!r} has no version with alias {alias!r}; nothing to roll back"
        ) from None
    previous = current.tags.get(PREVIOUS_TAG)
    if not previous:
        raise StageError(
            f"{name} version {current.version} (alias {alias!r}) was the first deployment; "
            f"no previous version to roll back to"
        )
    client.set_registered_model_alias(name, alias, previous)
    client.set_model_version_tag(name, current.version, "rolled_back", "true")
    if str(_alias_version(client, name, CANDIDATE)) == str(current.version):  # nothing may still load it by alias
        client.delete_registered_model_alias(name, CANDIDATE)
    older = client.get_model_version(name, previous).tags.get(PREVIOUS_TAG)
    if older:
        client.set_registered_model_alias(name, f"previous-{alias}", older)
    else:
        try:
            client.delete_registered_model_alias(name, f"previous-{alias}")
        except Exception:  # noqa: BLE001 - it was never set
            pass
    return {"registered_model": name, "alias": alias, "from_version": str(current.version), "to_version": previous}
