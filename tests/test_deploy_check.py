"""Issue #28: what is deployed answers as what was evaluated. The deploy check (llmops.deploy_check) on the tiny
model: the registered adapter and the merged export, loaded from a real MLflow registry in an empty folder, answer
the held-out domain items exactly as eval_tuned recorded; a wrong base (another seed's) and a corrupted adapter
tensor are caught, and deploy refuses to move the alias.

Run:  pytest tests/test_deploy_check.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import offline_env
from test_gate import compare_metrics, judge_metrics

from llmops import deploy, deploy_check, gate, registry, schemas, verify
from llmops.artifacts import sha256_tree
from llmops.config import load_params
from llmops.errors import StageError


def test_an_lm_eval_sample_gives_its_prompt_answer_and_label():
    """lm-eval's per-sample log layout (generate_until), as eval_tuned writes it."""
    sample = {
        "doc_id": 7,
        "doc": {"source_line": 8},
        "arguments": [["<|user|>\nticket<|end|>\n<|assistant|>\n", {"until": ["<|end|>"], "max_gen_toks": 48}]],
        "resps": [["Category: billing\nAction: refund."]],
        "filtered_resps": ["billing"],
        "filter": "label",
    }
    assert deploy_check.context(sample).endswith("<|assistant|>\n")
    assert deploy_check.answer(sample) == "Category: billing\nAction: refund."
    assert deploy_check.label(sample) == "billing"
    other = dict(sample, filter="none", filtered_resps=["Category: billing"])
    assert deploy_check.by_doc([sample, other]) == {"7": sample}  # the task's first (primary) filter is kept
    dict_args = dict(sample, arguments={"gen_args_0": {"arg_0": "prompt", "arg_1": {}}})  # lm-eval's JSON layout
    assert deploy_check.context(dict_args) == "prompt"


@pytest.fixture(scope="module")
def evaluated(trained_workdir, tmp_path_factory) -> Path:
    """trained_workdir + eval_base and eval_tuned run for real (their per-item answers are what the check compares
    with), and a passing gate for that adapter (the shrunk model's own figures would not pass; the answers are real)."""
    from llmops import evaluate

    work = tmp_path_factory.mktemp("evaluated") / "work"
    shutil.copytree(trained_workdir, work)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        raw = yaml.safe_load((work / "params.yaml").read_text())
        raw["eval"]["regression_tasks"] = ["general_arith"]  # the check reads the domain task; keep the eval short
        (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        evaluate.run(load_params(), "base")
        evaluate.run(load_params(), "tuned")
        sha = sha256_tree(work / "models/adapter")
        compare = compare_metrics(sha)
        del compare["tasks"]["general_qa"]  # not in this suite (regression_tasks above)
        (work / "reports/eval_compare.json").write_text(json.dumps(compare))
        (work / "reports/judge.json").write_text(json.dumps(judge_metrics(sha)))
        assert gate.run(load_params()).verdict == "pass"
    return work


@pytest.fixture
def work(evaluated, in_copy_of, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'registry.db'}")
    return in_copy_of(evaluated)


def set_params(work: Path, **deploy_params) -> None:
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["deploy"].update(deploy_params)
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def staged_version(tmp: Path) -> Path:
    """The folder deploy registers (adapter, bundled base, manifest), as a download would hold it."""
    return registry.stage_version(load_params(), "card", tmp)


def corrupt_adapter_tensor(version_dir: Path) -> str:
    """Overwrite one LoRA tensor of the staged adapter with noise, as a bad upload or conversion would."""
    import torch
    from safetensors.torch import load_file, save_file

    path = version_dir / "adapter/adapter_model.safetensors"
    tensors = load_file(path)
    name = sorted(k for k in tensors if "lora_B" in k)[0]
    tensors[name] = torch.randn(tensors[name].shape, generator=torch.Generator().manual_seed(0))
    save_file(tensors, path)
    return name


def another_seeds_base(work: Path, dest: Path) -> Path:
    """The same tiny architecture and data, pretrained from seed 1: a plausible wrong base."""
    from llmops import base

    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["base"]["seed"] = 1
    raw["paths"]["base_dir"] = str(dest)
    raw["paths"]["reports"] = str(dest.parent / "reports-other")
    (work / "other.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    base.run(load_params(work / "other.yaml"))
    return dest


@pytest.mark.slow  # lm-eval runs of the domain task on the (tiny) model
def test_the_registered_adapter_and_merged_export_answer_as_evaluated(work):
    set_params(work, merged=True)
    result = deploy.run(load_params())
    check = schemas.read(work / "reports/deploy_check.json", schemas.DeployCheck)
    assert check.passed and [f.form for f in check.forms] == ["adapter", "merged"]
    recorded = (work / "reports/eval_samples/tuned/triage_gen.jsonl").read_text().splitlines()
    for form in check.forms:
        assert form.items == len(recorded) > 0 and form.identical_answers == form.items, form
        assert form.label_changes == [] and form.max_first_token_logprob_diff < 1e-3, form
    assert result["deploy_check"]["passed"] and result["merged"]["merged_dir"] == "models/merged"

    from llmops.tracking import mlflow

    client = mlflow().MlflowClient()
    name = load_params().deploy.registry_name
    version = client.get_model_version_by_alias(name, "production")
    assert version.tags["deploy_check"] == "passed" and version.tags["deploy_check_label_changes"] == "0"
    assert "identical answers" in version.tags["deploy_check_summary"] and "## Deploy check" in version.description
    card = (work / "reports/model_card.md").read_text()
    assert "## Deploy check" in card and f"{len(recorded)}/{len(recorded)} identical answers" in card

    # the merged export: a plain HF folder (vLLM/TGI/GGUF converters), registered beside the adapter
    merged = work / "models/merged"
    assert {"model.safetensors", "config.json", "tokenizer.json", "llmops_merged.json"} <= {
        p.name for p in merged.iterdir()
    }
    assert json.loads((merged / "llmops_merged.json").read_text())["adapter_sha256"] == check.adapter_sha256

    # `llmops deploy-check` checks any registered version against this repo's eval, from an empty folder
    env = offline_env(work, MLFLOW_TRACKING_URI=os.environ["MLFLOW_TRACKING_URI"])
    proc = subprocess.run(
        ["llmops", "deploy-check", "--model-uri", f"models:/{name}@production"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["passed"] is True

    # issue #25: the version is an MLflow model; `mlflow models serve` serves it from an empty folder, no repo
    answer = mlflow_models_serve(f"models:/{name}@production", work.parent / "mlflow-serve", env)
    assert isinstance(answer, str) and answer.strip(), answer


def mlflow_models_serve(model_uri: str, folder: Path, env: dict[str, str]) -> str:
    """`mlflow models serve -m <uri> --env-manager local` in `folder`; one /invocations request; its answer."""
    import socket
    import time
    import urllib.request

    folder.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clean = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(
        ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=folder,
        env=clean,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "mlflow models serve did not come up"
                time.sleep(0.5)
        body = {"dataframe_records": [{"prompt": "Ticket: fiber cut at site B18", "max_new_tokens": 8}]}
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=120) as resp:
            (answer,) = json.loads(resp.read())["predictions"]
        return answer
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow  # lm-eval runs of the domain task on the (tiny) model
def test_a_corrupted_adapter_tensor_is_caught_and_deploy_keeps_the_alias(work, tmp_path):
    version_dir = staged_version(tmp_path / "staged")
    corrupt_adapter_tensor(version_dir)
    check = verify.registry_check(load_params(), version_dir)
    (form,) = check.forms
    assert not check.passed and form.max_first_token_logprob_diff > 0.01, form
    assert form.identical_answers < form.items, form  # the noise changes what it says, not only how sure it is

    # through deploy: the upload is corrupted on its way (the check sees the downloaded copy); alias stays put
    def corrupt_then_check(params, downloaded: Path):
        corrupt_adapter_tensor(downloaded)
        return verify.registry_check(params, downloaded)

    with pytest.raises(StageError, match=r"deploy check of .* version 1 failed: adapter: .*alias 'production' left"):
        deploy.run(load_params(), check=corrupt_then_check)
    from llmops.tracking import mlflow

    client = mlflow().MlflowClient()
    name = load_params().deploy.registry_name
    assert client.get_model_version(name, "1").tags["deploy_check"] == "failed"
    with pytest.raises(Exception, match="production"):
        client.get_model_version_by_alias(name, "production")
    assert not schemas.read(work / "reports/deploy_check.json", schemas.DeployCheck).passed


@pytest.mark.slow  # lm-eval runs of the domain task on the (tiny) model
def test_another_seeds_base_is_caught_by_labels_and_log_probabilities(work, tmp_path):
    version_dir = staged_version(tmp_path / "staged")
    wrong = another_seeds_base(work, tmp_path / "other-base")
    for f in wrong.iterdir():
        if f.name != "identity.json":
            shutil.copy2(f, version_dir / "base" / f.name)
    check = verify.registry_check(load_params(), version_dir)
    (form,) = check.forms
    assert not check.passed and form.max_first_token_logprob_diff > 0.01, form
    assert any("log-probability" in r for r in form.reasons)
    # a tolerance that admits the difference and the label changes passes it: the param is what decides
    set_params(work, check_max_label_changes=form.items, check_max_logprob_diff=None)
    assert verify.registry_check(load_params(), version_dir).passed


@pytest.mark.slow  # lm-eval runs of the domain task on the (tiny) model
def test_a_check_against_another_adapters_answers_is_refused(work, tmp_path):
    (work / "models/adapter/README.md").write_text("changed after eval_tuned ran")
    with pytest.raises(StageError, match="eval_tuned.json: evaluated adapter .* not the current"):
        deploy_check.recorded(load_params())
