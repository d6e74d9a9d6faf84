"""The real offline model through every stage, shortened: profiles/smollm2.yaml applied by `llmops profile --run`
(a real `dvc exp run`) on a copy of the repo with 12 eval records, 2 LoRA steps, 4 items per benchmark and 4
judged. What it proves is the plumbing a real model exercises and the tiny one does not: GGUF conversion, the ChatML template and
EOS in prepare and train, lm-eval's own benchmark tasks, the judge's prompts through the real tokenizer, and a
gate that refuses to judge from 4 items; then deploy to an MLflow registry (its smoke test serves the registered
copy through `llmops serve`) and the registered version loaded in an empty folder, chatting through its own ChatML
template. The figures of a full run are in the README ("A real model, offline")."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from conftest import chat_with_registered, copy_repo, offline_env
from test_gate import compare_metrics, judge_metrics

from llmops.artifacts import sha256_tree

pytestmark = pytest.mark.slow  # ~5 min on 2 cores: a 135M-parameter model through 8 stages


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("real"))
    eval_file = repo / "data/raw/eval.jsonl"
    eval_file.write_text("".join(eval_file.read_text().splitlines(keepends=True)[:12]))
    profile = yaml.safe_load((repo / "profiles/smollm2.yaml").read_text())
    profile.update({"train.max_steps": 2, "eval.limit": 4, "judge.limit": 4})  # the shortening: mechanics, not figures
    (repo / "profiles/smollm2.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    env = offline_env(repo)
    subprocess.run(["git", "commit", "-qam", "shortened real run"], cwd=repo, env=env, check=True)
    proc = subprocess.run(["llmops", "profile", "smollm2", "--run"], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return repo


def report(repo, name):
    return json.loads((repo / "reports" / name).read_text())


def test_the_base_is_the_converted_gguf_and_training_used_its_chat_template(repo):
    ident = json.loads((repo / "models/base/identity.json").read_text())
    assert ident["source"] == "gguf" and ident["model"] == "smollm2-135m-instruct"
    first = json.loads((repo / "data/prepared/eval.jsonl").read_text().splitlines()[0])
    assert first["prompt"].startswith("<|im_start|>system\n")  # SmolLM2's ChatML, not the tiny model's template
    assert first["prompt"].endswith("<|im_start|>assistant\n")
    assert report(repo, "train.json")["steps"] == 2


def test_every_task_was_evaluated_on_both_models(repo):
    tasks = report(repo, "eval_compare.json")["tasks"]
    assert set(tasks) == {"triage_gen", "triage_mc", "arc_easy_slice", "hellaswag_slice", "piqa_slice"}
    assert all(t["n"] == 4 for t in tasks.values())  # eval.limit: 4 items each
    assert tasks["arc_easy_slice"]["metric"] == "acc_norm"


def test_the_judge_ran_through_the_real_tokenizer(repo):
    judge = report(repo, "judge.json")
    assert judge["failure_rate"] == 0.0 and judge["calls"] > 0  # every prompt fit and every call answered
    assert (judge["items"], judge["eval_items"]) == (4, 12)  # judge.limit


def test_four_items_are_no_verdict(repo):
    gate = report(repo, "gate.json")
    assert gate["verdict"] == "error" and gate["exit_code"] == 2
    assert any("4 items cannot show" in e for e in gate["errors"]), gate["errors"]
    assert (repo / "reports/report.md").is_file()


def test_deploy_registers_the_real_model_and_an_empty_folder_chats_with_it(repo):
    """A 2-step adapter cannot earn a pass, so the gate is given figures that describe this adapter (as
    test_deploy does): what is under test is the registry, the smoke test and loading, with the real tokenizer."""
    sha = sha256_tree(repo / "models/adapter")
    compare = compare_metrics(sha)
    regression = [compare["tasks"].pop(t) for t in ("general_qa", "general_arith")]
    compare["tasks"].update(arc_easy_slice=regression[0], hellaswag_slice=regression[0], piqa_slice=regression[1])
    (repo / "reports/eval_compare.json").write_text(json.dumps(compare))
    (repo / "reports/judge.json").write_text(json.dumps(judge_metrics(sha)))
    env = offline_env(repo)
    gated = subprocess.run(["llmops", "gate"], cwd=repo, env=env, capture_output=True, text=True)
    assert gated.returncode == 0, gated.stdout[-3000:] + gated.stderr[-3000:]
    proc = subprocess.run(["llmops", "deploy"], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    deployed = json.loads(proc.stdout)
    assert deployed["smoke_test"]["ok"], deployed  # the registered copy, served by llmops serve, answered
    # the deploy check (issue #28): the registered copy, loaded from an empty folder, answered every held-out domain
    # item exactly as eval_tuned recorded for this adapter
    (form,) = deployed["deploy_check"]["forms"]
    assert deployed["deploy_check"]["passed"] and form["identical_answers"] == form["items"] > 0, form
    assert form["max_first_token_logprob_diff"] < 1e-3, form

    name = yaml.safe_load((repo / "params.yaml").read_text())["deploy"]["registry_name"]
    out = chat_with_registered(
        f"models:/{name}@production",
        repo.parent / "empty",
        env,
        """
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
        answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        ident = json.loads(Path("base/identity.json").read_text())  # bundled: served from the version's folder
        print(json.dumps({"prompt": prompt, "answer": answer, "base": [ident["model"], "gguf_sha256" in ident]}))
        """,
    )
    got = json.loads(out.strip().splitlines()[-1])
    assert got["base"] == ["smollm2-135m-instruct", True]  # the converted GGUF, its source file's hash kept
    assert got["prompt"].endswith("<|im_start|>assistant\n")  # SmolLM2's own template
    assert any(c.isalpha() for c in got["answer"]), got  # words, through the real tokenizer
