"""`llmops deploy` / `llmops rollback`: ship the gated adapter to the MLflow model registry, or step back.

Run:  llmops deploy                 (re-evaluates the gate rules from reports/*.json for the current adapter)
      llmops deploy --version 3     (redeploy: point the alias at an earlier, smoke-tested, gated version)
      llmops rollback               (moves the alias back to the version that held it before the last deploy)
Store: MLFLOW_TRACKING_URI (a `mlflow server`, Databricks, ...) or params `tracking.uri`. Deploy refuses to run
without one, and under GitHub Actions refuses a store on the runner's disk (sqlite:, file:): it is thrown away.

deploy:
  1. re-evaluates the gate rules (gate.evaluate) from the metrics for sha256_tree(models/adapter): a
     hand-written reports/gate.json cannot make a failing model pass;
  2. writes the model card (llmops.model_card) into the registered copy and to reports/model_card.md;
     models/adapter itself is not touched: it is train's DVC output and its content hash is what the gate vouches for;
  3. with deploy.merged: merges and checks the export (llmops.export) before anything is registered;
  4. registers a self-sufficient version (llmops.registry: adapter, bundled or hub-pinned base, merged export,
     manifest), tagged with git sha, params hash, data hash, adapter sha, base identity and gate verdict;
  5. alias `candidate` -> the new version; one download of `models:/<name>@candidate` into an empty folder is
     smoke-tested (served from there, one chat request within deploy.smoke_max_latency_s) and checked item by item
     against eval_tuned's answers (deploy.check; llmops.verify, llmops.deploy_check: reports/deploy_check.json, the
     version's tags, description and card). Only then does deploy.alias move; a failure leaves it where it was and
     exits non-zero.
The previous alias holder is kept as the new version's tag `previous_version` and alias `previous-<alias>`:
rollback follows that chain one step per call.

Why one module (~330 lines): deploy, redeploy and rollback share the alias chain; the version's format, card
and checks are llmops.registry, llmops.model_card and llmops.verify.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from llmops import schemas
from llmops.artifacts import read_json, sha256_file, sha256_tree, write_text
from llmops.config import PARAMS_FILE, Params
from llmops.errors import StageError
from llmops.model_card import model_card, read_report
from llmops.registry import stage_version
from llmops.schemas import GateReport, Lineage, Verdict
from llmops.tracking import mlflow
from llmops.verify import (
    Check,
    SmokeTest,
    from_registry,
    record_check,
    registry_check,
    smoke_from_registry,
    smoke_test,
)

PREVIOUS_TAG = "previous_version"
CANDIDATE = "candidate"  # the alias the smoke test loads before deploy.alias moves


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
    recorded = read_report(params, schemas.GATE, GateReport)
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


def _base_identity(path: Path) -> dict[str, Any]:
    """paths.base_dir/identity.json, or {} when missing or unreadable. No contract: its keys depend on where the
    base came from (built, local folder, hub), and llmops.model reads it as plain JSON too."""
    try:
        return read_json(path) or {}
    except (OSError, json.JSONDecodeError):
        return {}


def lineage(params: Params) -> Lineage:
    """Where this adapter came from: code, params, data, base model and DVC's own output hashes."""
    paths = params.paths
    identity = _base_identity(paths.base_identity)
    lock = {}
    if Path("dvc.lock").is_file():  # DVC's own file format, read as plain YAML
        stages = (yaml.safe_load(Path("dvc.lock").read_text()) or {}).get("stages", {})
        lock = {o["path"]: o.get("md5") for s in stages.values() for o in s.get("outs", []) if "path" in o}
    status = _git("status", "--porcelain")
    return Lineage(
        git_sha=_git("rev-parse", "HEAD") or "unknown",
        git_dirty=None if status is None else bool(status),
        params_sha256=sha256_file(PARAMS_FILE) if PARAMS_FILE.is_file() else "unknown",
        data_sha256=sha256_tree(paths.prepared_dir) if paths.prepared_dir.is_dir() else "unknown",
        adapter_sha256=sha256_tree(paths.adapter_dir),
        base_model=str(identity.get("model", "unknown")),
        base_revision=identity.get("revision"),
        base_weights_sha256=identity.get("weights_sha256") or identity.get("config_sha256"),
        base_identity=identity,
        dvc_outs_md5=lock,
    )


def _move_alias(client, name: str, alias: str, version: str, previous: str | None) -> None:
    client.set_registered_model_alias(name, alias, version)
    if previous and previous != version:
        client.set_registered_model_alias(name, f"previous-{alias}", previous)


def run(params: Params, smoke: SmokeTest | None = None, check: Check | None = None) -> dict:
    require_tracking_uri(params)
    gate = check_gate(params)
    smoke = smoke or smoke_test
    check = check or (registry_check if params.deploy.check else None)
    exported = None
    if params.deploy.merged:
        from llmops import export

        exported = export.run(params)  # merged and checked before it is staged; StageError if it answers otherwise
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
        "git_sha": lin.git_sha,
        "params_sha256": lin.params_sha256,
        "data_sha256": lin.data_sha256,
        "adapter_sha256": lin.adapter_sha256,
        "base_model": lin.base_model,
        "base_revision": str(lin.base_revision),
        "base_weights_sha256": str(lin.base_weights_sha256),
        "gate_verdict": gate.verdict.value,
    }
    # MLflow's run context marks the run FAILED on any exception (a refused smoke test or check included)
    with ml.start_run(
        experiment_id=exp_id, run_name=f"deploy-{lin.adapter_sha256[:12]}", tags={"llmops.stage": "deploy", **tags}
    ) as run_:
        run_id = run_.info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            staged = stage_version(params, card, Path(tmp))
            client.log_artifacts(run_id, str(staged), "model")
            write_text(Path(tmp) / "gate.json", json.dumps(gate.model_dump(mode="json"), indent=2, sort_keys=True))
            client.log_artifact(run_id, str(Path(tmp) / "gate.json"), "reports")  # the re-evaluated verdict
            for report in (schemas.EVAL_COMPARE, schemas.JUDGE, schemas.DATA, "model_card.md"):
                if params.paths.report(report).is_file():
                    client.log_artifact(run_id, str(params.paths.report(report)), "reports")
            client.log_dict(run_id, lin.model_dump(mode="json"), "lineage.json")
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
        # Smoke-test and check what the registry now serves, by alias, in an empty folder: catches a broken upload,
        # a version that needs the repo, a missing or wrong base, and weights that answer otherwise than evaluated.
        client.set_registered_model_alias(name, CANDIDATE, version)
        result, checked = from_registry(ml, params, f"models:/{name}@{CANDIDATE}", smoke, check)
        client.set_model_version_tag(name, version, "smoke_test", "passed" if result["ok"] else "failed")
        if result.get("latency_s") is not None:
            client.set_model_version_tag(name, version, "smoke_latency_s", str(result["latency_s"]))
            client.log_metric(run_id, "smoke_latency_s", float(result["latency_s"]))
        if not result["ok"]:
            raise StageError(
                f"smoke test of {name} version {version} failed ({result['reason']}); "
                f"alias {alias!r} left on version {previous}"
            )
        if checked is not None:
            record_check(client, params, run_id, name, version, checked, model_card(params, lin, gate, checked))
            if not checked.passed:
                from llmops.deploy_check import failure

                raise StageError(
                    f"deploy check of {name} version {version} failed: {failure(checked)}; alias {alias!r} left on "
                    f"version {previous} (reports/deploy_check.json)"
                )
        _move_alias(client, name, alias, version, previous)
    return {
        "registered_model": name,
        "version": version,
        "alias": alias,
        "previous_version": previous,
        "run_id": run_id,
        "smoke_test": result,
        "deploy_check": None if checked is None else checked.model_dump(mode="json"),
        **({"merged": exported} if exported else {}),
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
    result = smoke_from_registry(ml, params, f"models:/{name}/{version}", smoke or smoke_test)
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
