"""deploy / rollback against a real MLflow sqlite store under tmp_path and a real `mlflow server` on loopback;
deploy refuses without a passing gate for this exact adapter; the model card; the real smoke test (slow)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import REPORT_EXAMPLES, chat_with_registered, make_workdir, offline_env, raw_params
from test_gate import compare_metrics, judge_metrics

from llmops import deploy, gate, registry
from llmops.artifacts import sha256_tree
from llmops.config import load_params
from llmops.errors import StageError
from llmops.tracking import mlflow

NAME = raw_params()["deploy"]["registry_name"]  # baked repos name it after their slug


pytestmark = pytest.mark.integration  # a real MLflow store / dvc / git in every test


def ok_smoke(params, version_dir: Path) -> dict:
    # The folder is what models:/<name>@candidate returns, in an empty directory: adapter, card, base, manifest.
    assert Path.cwd() != version_dir.parent and not (version_dir.parent / "params.yaml").exists()
    assert (version_dir / "adapter/adapter_model.safetensors").is_file() and (
        version_dir / "adapter/README.md"
    ).is_file()
    assert (version_dir / "base/model.safetensors").is_file() and (version_dir / registry.MANIFEST).is_file()
    return {"ok": True, "latency_s": 0.01, "reason": "ok"}


def retrain_and_gate(work: Path, weights: str) -> str:
    """New adapter bytes, metrics that describe them, and a passing gate.json (written by the real gate)."""
    (work / "models/adapter/adapter_model.safetensors").write_text(weights)
    sha = sha256_tree(work / "models/adapter")
    (work / "reports/eval_compare.json").write_text(json.dumps(compare_metrics(sha)))
    (work / "reports/judge.json").write_text(json.dumps(judge_metrics(sha)))
    assert gate.run(load_params()).verdict == "pass"
    return sha


@pytest.fixture
def work(tmp_path, monkeypatch):
    raw = raw_params()
    raw["deploy"]["check"] = False  # placeholder weights answer nothing: the check is tests/test_deploy_check.py's
    work = make_workdir(tmp_path / "work", raw)
    monkeypatch.chdir(work)
    (work / "models/adapter").mkdir(parents=True)
    (work / "models/adapter/README.md").write_text("peft placeholder card")
    (work / "models/base").mkdir(parents=True)
    (work / "models/base/identity.json").write_text(
        json.dumps(
            {
                "model": "tiny",
                "source": "built",
                "path": "models/base",
                "revision": None,
                "weights_sha256": "w" * 64,
                "config_sha256": "c" * 64,
            }
        )
    )
    (work / "models/base/model.safetensors").write_text("base weights")
    (work / "models/adapter/adapter_config.json").write_text('{"r": 16, "base_model_name_or_path": "models/base"}')
    (work / "data/prepared").mkdir(parents=True)
    (work / "data/prepared/train.jsonl").write_text('{"messages": []}\n')
    (work / "reports").mkdir()
    data = json.loads((REPORT_EXAMPLES / "data.json").read_text())  # a valid data.json contract
    (work / "reports/data.json").write_text(json.dumps(dict(data, labels=["billing", "transport"])))
    env = offline_env(work)
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "c"]):
        subprocess.run(cmd, cwd=work, env=env, check=True)
    retrain_and_gate(work, "weights v1")
    return work


def client():
    return mlflow().MlflowClient()


def alias_version(alias="production"):
    return str(client().get_model_version_by_alias(NAME, alias).version)


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def deploy_and_rollback_cycle(work: Path) -> None:
    first = deploy.run(load_params(), smoke=ok_smoke)
    assert (first["version"], first["previous_version"], first["alias"]) == ("1", None, "production")
    assert alias_version() == "1"
    mv = client().get_model_version(NAME, "1")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True).stdout.strip()
    assert mv.tags["git_sha"] == head and mv.tags["gate_verdict"] == "pass"
    assert mv.tags["adapter_sha256"] == sha256_tree(work / "models/adapter")
    assert mv.tags["params_sha256"] == deploy.sha256_file(work / "params.yaml")
    assert mv.tags["data_sha256"] == sha256_tree(work / "data/prepared")
    assert (mv.tags["base_model"], mv.tags["base_weights_sha256"], mv.tags["smoke_test"]) == (
        "tiny",
        "w" * 64,
        "passed",
    )

    # what the registry hands out: adapter (card as README, config naming the bundled base), base, manifest
    got = Path(mlflow().artifacts.download_artifacts(f"models:/{NAME}@production", dst_path=str(work / "dl")))
    assert (got / "adapter/adapter_model.safetensors").read_text() == "weights v1"
    assert (got / "base/model.safetensors").read_text() == "base weights"
    assert json.loads((got / "adapter/adapter_config.json").read_text())["base_model_name_or_path"] == "base"
    manifest = json.loads((got / registry.MANIFEST).read_text())
    assert manifest["base"] == {"dir": "base", "source": "bundled", "sha256": sha256_tree(got / "base")}
    loaded = registry.load_version(got)
    assert loaded.adapter_dir == got / "adapter" and json.loads(loaded.base_identity.read_text())["source"] == "built"
    card = (got / "adapter/README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "peft" and "lora" in meta["tags"]
    results = {r["dataset"]["name"]: r["metrics"] for r in meta["model-index"][0]["results"]}
    assert {"name": "exact_match (tuned)", "type": "exact_match", "value": 0.985} in results["general_qa"]
    for heading in ("## Data", "## Training parameters", "## Evaluation", "## Lineage", "## Limitations"):
        assert heading in card
    assert f"git commit: `{head}`" in card
    assert (work / "models/adapter/README.md").read_text() == "peft placeholder card"
    assert (work / "reports/model_card.md").read_text() == card
    shutil.rmtree(work / "dl")

    retrain_and_gate(work, "weights v2")
    second = deploy.run(load_params(), smoke=ok_smoke)
    assert (second["version"], second["previous_version"]) == ("2", "1")
    assert alias_version() == "2" and alias_version("previous-production") == "1"

    assert alias_version("candidate") == "2"  # what the smoke test loaded
    back = deploy.rollback(load_params())
    assert (back["from_version"], back["to_version"]) == ("2", "1")
    assert alias_version() == "1"
    with pytest.raises(Exception, match="candidate"):  # no alias still hands out the rolled-back version
        alias_version("candidate")
    assert client().get_model_version(NAME, "2").tags["rolled_back"] == "true"
    with pytest.raises(StageError, match="first deployment"):
        deploy.rollback(load_params())
    assert alias_version() == "1"


def test_deploy_and_rollback_local_sqlite_store(work, tmp_path):
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    deploy_and_rollback_cycle(work)
    assert (tmp_path / "mlflow.db").is_file()


def regate(work: Path, **judge_changes) -> None:
    judged = dict(judge_metrics(sha256_tree(work / "models/adapter")), **judge_changes)
    (work / "reports/judge.json").write_text(json.dumps(judged))
    gate.run(load_params())


def hand_written_pass(w: Path) -> None:
    """Failing metrics, and a gate.json edited by hand to say pass: deploy must believe the metrics."""
    regate(w, invalid_rate=0.9)
    forged = json.loads((w / "reports/gate.json").read_text())
    forged.update(verdict="pass", exit_code=0)
    (w / "reports/gate.json").write_text(json.dumps(forged))


@pytest.mark.parametrize(
    "breakage, message",
    [
        (hand_written_pass, "re-evaluated from the metrics: verdict 'fail'.*gate.json says 'pass'"),
        (lambda w: regate(w, invalid_rate=0.9), "verdict 'fail'"),
        (lambda w: regate(w, calibration=None), "verdict 'error'"),
        (
            lambda w: (w / "models/adapter/adapter_model.safetensors").write_text("retrained, not gated"),
            "verdict 'error'.*not the current adapter",
        ),
        (lambda w: shutil.rmtree(w / "models/adapter"), "adapter folder missing"),
    ],
)
def test_deploy_refuses_without_a_passing_gate_for_this_adapter(work, breakage, message):
    breakage(work)
    with pytest.raises(StageError, match=message):
        deploy.run(load_params(), smoke=ok_smoke)
    assert client().search_registered_models() == []


def test_failed_smoke_test_keeps_the_alias(work):
    deploy.run(load_params(), smoke=ok_smoke)
    retrain_and_gate(work, "weights v2")

    def broken(params, adapter_dir):
        raise RuntimeError("server exited with code 1")

    with pytest.raises(
        StageError, match="smoke test .* version 2 failed .*server exited.* alias 'production' left on version 1"
    ):
        deploy.run(load_params(), smoke=broken)
    assert alias_version() == "1"
    assert client().get_model_version(NAME, "2").tags["smoke_test"] == "failed"


def test_rollback_without_deployments_is_an_error(work):
    with pytest.raises(StageError, match="no version with alias 'production'"):
        deploy.rollback(load_params())


def test_deploy_refuses_without_a_real_tracking_uri(work, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(StageError, match="no MLflow tracking URI"):
        deploy.run(load_params(), smoke=ok_smoke)
    assert not (work / "mlflow.db").exists()  # nothing was registered into a default local store
    # under GitHub Actions a store on the runner's disk is refused too: it is deleted with the runner
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    for call in (
        lambda: deploy.run(load_params(), smoke=ok_smoke),
        lambda: deploy.rollback(load_params()),
        lambda: deploy.redeploy(load_params(), "1", smoke=ok_smoke),
    ):
        with pytest.raises(StageError, match="sqlite store on the runner's disk"):
            call()
    # the CLI: exit 1, one clear line, no traceback
    env = offline_env(work, GITHUB_ACTIONS="true")
    del env["MLFLOW_TRACKING_URI"]
    proc = subprocess.run(["llmops", "deploy"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "no MLflow tracking URI" in proc.stderr and "Traceback" not in proc.stderr


def test_redeploy_a_given_version_then_rollback(work):
    deploy.run(load_params(), smoke=ok_smoke)
    retrain_and_gate(work, "weights v2")
    deploy.run(load_params(), smoke=ok_smoke)
    assert alias_version() == "2"
    out = deploy.redeploy(load_params(), "1", smoke=ok_smoke)
    assert (out["version"], out["previous_version"]) == ("1", "2")
    assert alias_version() == "1" and alias_version("previous-production") == "2"
    assert deploy.rollback(load_params())["to_version"] == "2"  # one step back = where redeploy came from
    assert alias_version() == "2"
    with pytest.raises(StageError, match="no version '9'"):
        deploy.redeploy(load_params(), "9", smoke=ok_smoke)

    def broken(params, version_dir):
        raise RuntimeError("cannot load base")

    with pytest.raises(StageError, match="smoke test of .* version 1 failed .*cannot load base"):
        deploy.redeploy(load_params(), "1", smoke=broken)
    assert alias_version() == "2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path, monkeypatch):
    """A real `mlflow server` on 127.0.0.1 (own sqlite + artifact folder), stopped after the test."""
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination",
            str(store / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "wb"),
        env=offline_env(tmp_path),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        yield store
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_deploy_and_rollback_against_mlflow_server(mlflow_server, work):
    deploy_and_rollback_cycle(work)
    # artifacts went through the server into its own artifact store, not into a local ./mlruns
    uploaded = list((mlflow_server / "artifacts").rglob("adapter/adapter_model.safetensors"))
    assert len(uploaded) == 2, uploaded
    assert not (work / "mlruns").exists()


def serve_from_registry(model_uri: str, folder: Path, env: dict[str, str]) -> dict:
    """Start `llmops serve --model-uri` in `folder`, send one chat request to "tuned", stop it; the answer."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["llmops", "serve", "--model-uri", model_uri, "--port", str(port)],
        cwd=folder,
        env={k: v for k, v in env.items() if k != "PYTHONPATH"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        body = {"model": "tuned", "messages": [{"role": "user", "content": "Ticket: site B18 down"}], "max_tokens": 8}
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_cli_deploy_with_real_smoke_test(tiny_workdir, in_copy_of):
    """The real thing on the tiny model: train, gate, `llmops deploy` serves the registered adapter."""
    from llmops import train

    work = in_copy_of(tiny_workdir)
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["deploy"]["check"] = False  # no eval ran here; tests/test_deploy_check.py deploys with the check on
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    train.run(load_params())
    sha = sha256_tree(work / "models/adapter")
    (work / "reports/eval_compare.json").write_text(json.dumps(compare_metrics(sha)))
    (work / "reports/judge.json").write_text(json.dumps(judge_metrics(sha)))
    assert gate.run(load_params()).verdict == "pass"
    env = offline_env(work, MLFLOW_TRACKING_URI=os.environ["MLFLOW_TRACKING_URI"])  # the store this test reads
    proc = subprocess.run(["llmops", "deploy"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["smoke_test"]["ok"] and 0 < result["smoke_test"]["latency_s"] < 60
    assert alias_version() == "1"
    assert float(client().get_model_version(NAME, "1").tags["smoke_latency_s"]) > 0

    # the registry entry alone: an empty folder, no repo, no llmops; peft finds the base from adapter_config
    out = chat_with_registered(
        f"models:/{NAME}@production",
        work.parent / "empty",
        env,
        """
        ids = tok("Ticket: fiber cut at site B18", return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.eos_token_id)
        print("GENERATED", out.shape[1] - ids.shape[1])
        """,
    )
    assert "GENERATED" in out and int(out.split()[-1]) > 0

    # `llmops serve --model-uri` from another empty folder: no repo, no params.yaml, the OpenAI-style request
    served = work.parent / "serve-here"
    served.mkdir()
    answer = serve_from_registry(f"models:/{NAME}@production", served, env)
    assert answer["object"] == "chat.completion" and isinstance(answer["choices"][0]["message"]["content"], str)
    assert list(served.iterdir()) == []  # the download lived in a temporary folder, gone with the server
    proc = subprocess.run(
        ["llmops", "serve", "--model-uri", f"models:/{NAME}@no-such-alias", "--port", "0"],
        cwd=served,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "no-such-alias" in proc.stderr and "Traceback" not in proc.stderr

    # an impossible latency budget: the real smoke test fails, deploy exits non-zero, the alias stays
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["deploy"]["smoke_max_latency_s"] = 1e-6
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = subprocess.run(["llmops", "deploy"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "smoke test" in proc.stderr and "latency" in proc.stderr
    assert alias_version() == "1"
