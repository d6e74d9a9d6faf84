"""The cookiecutter template (template/): bake new domain repositories and check them, take an update with
cruft, and push/pull the DVC remote an `s3://` answer configures, against moto_server on 127.0.0.1.

Run:  pytest tests/test_template.py               (fast tier: bakes, file set, answers, dvc repro --dry, cruft, S3)
      pytest -m slow tests/test_template.py       (a baked repo's own fast suite and its full dvc repro)

Bakes come from a clean git copy of this repository (conftest.copy_repo), through the real cookiecutter CLI.
Expected file sets are computed from that copy and template/exclude.txt, never listed here, so a stage or
workflow added to the repository is expected in every bake without touching this file.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import BIN, copy_repo, moto_s3, offline_env

SLUG_DIR = "{{cookiecutter.project_slug}}"
DVC_INIT_FILES = {".dvc/config", ".dvc/.gitignore", ".dvcignore"}
LINK_FILE = ".cruft.json"  # written by the hook, so a plain cookiecutter bake takes `cruft update`

# Two deliberately different answer sets: defaults-like (tiny model, action answers, S3 remote) and a
# "real model" one (hub base, label-only answers, remote judge, MLflow server, no DVC remote).
CLAIMS = {
    "project_name": "Claims Triage",
    "domain_name": "insurance claims",
    "domain_description": "Route each incoming claim note to the team that handles it.",
    "labels": "auto, property,health,liability",
    "label_prefix": "Route",  # issue #26: the answer format is the bake's, not the demo's "Category:"
    "detail_prefix": "Reply",
    "task_kind": "classify_and_act",
    "base_model": "",
    "judge_base_url": "",
    "judge_model": "",
    "gate_domain_min": "",
    "gate_regression_min_ratio": "",  # keep params'
    "dvc_remote_url": "s3://llmops-test/claims",
    "mlflow_tracking_uri": "",
}
LEGAL = {
    "project_name": "Legal Clause Tagging",
    "project_slug": "legal-tags",
    "domain_name": "legal clauses",
    "domain_description": "Tag each contract clause with its type.",
    "labels": "indemnity,termination,confidentiality,governing-law,payment_terms",
    "label_prefix": "Clause type",
    "task_kind": "classify",
    "base_model": "meta-llama/Llama-3.1-8B-Instruct",
    "judge_base_url": "https://judge.example.com/v1",
    "judge_model": "gpt-4o-mini",
    "gate_domain_min": "0.7",
    "gate_regression_min_ratio": "0.9",
    "dvc_remote_url": "",
    "mlflow_tracking_uri": "http://mlflow.example.com:5000",
}
SLUGS = {"claims": "claims-triage", "legal": "legal-tags"}
ANSWERS = {"claims": CLAIMS, "legal": LEGAL}
# Issue #13's newcomer bake (a legal-clause project): non-default labels, every other answer left at the template's
# default, which is what the baked README's `make demo` promise is made for (tiny base, local judge, the template's
# gate thresholds). The full-repro, leftover-text and cruft update tests use it.
CLAUSES = {
    "project_name": "Clause Types",
    "project_slug": "clause-types",
    "domain_name": "legal clauses",
    "domain_description": "Tag each contract clause with its type.",
    "labels": "termination,liability,confidentiality,payment,governing_law",
    "task_kind": "classify_and_act",
}

# The demo domain's vocabulary (telecom incident triage: data/make_demo_data.py's symptoms, openings, regions and
# runbook); its label set and label count are read from that file by demo_leftovers. None of it may reach a bake.
DEMO_WORDS = [
    "telecom", "incident", "incidents", "outage", "NOC", "runbook", "eNodeB", "gNodeB", "backhaul", "fiber",
    "SIM", "eSIM", "APN", "VoLTE", "handset", "subscriber", "subscribers", "tariff", "roaming", "cell site",
    "leased line", "microwave link", "MME", "IMS", "harbour", "valley", "coastal", "downtown", "airport",
]  # fmt: skip
# A figure next to "demo" is a claim about the demo's results ("tiny demo reaches 0.25"); "0.2M" is not a score.
DEMO_FIGURE = r"\bdemo\b[^\n]*\b[01]\.\d+\b|\b[01]\.\d+\b[^\n]*\bdemo\b"
# Hits in lines this branch may not edit, each reported to its owner (issue #13); delete an entry once reworded.
KNOWN_LEFTOVERS: set[tuple[str, str]] = set()  # (file, text) pairs allowed to stay: none left


def run(cmd, cwd, env, check=True, timeout=600):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def bake_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Offline env whose cookiecutter config keeps clones and replay files under tmp, not in ~."""
    config = tmp / "cookiecutterrc.yaml"
    config.write_text(
        yaml.safe_dump({"cookiecutters_dir": str(tmp / "cc-clones"), "replay_dir": str(tmp / "cc-replay")})
    )
    return offline_env(tmp, COOKIECUTTER_CONFIG=str(config), **extra)


def bake(template: Path, out: Path, answers: dict, check=True):
    out.mkdir(parents=True, exist_ok=True)
    cmd = [BIN / "cookiecutter", "--no-input", template, "--directory", "template", "--output-dir", out]
    return run(cmd + [f"{k}={v}" for k, v in answers.items()], cwd=out, env=bake_env(out), check=check)


def demo_leftovers(repo: Path, demo_source: Path) -> list[str]:
    """'path:line: text' of every line of a bake's text files that carries the demo domain's words or figures.

    tests/ is left out: its files are inputs to the shared code's own tests (a label list is a label list),
    not text a user of the new domain reads or edits. So is data/benchmarks/: public benchmark questions (ARC,
    HellaSwag, PIQA) for any domain's real-model regression, whose everyday words ("valley", "fiber") are theirs."""
    import runpy

    categories = list(runpy.run_path(str(demo_source), run_name="demo_data")["CATEGORIES"])
    words = DEMO_WORDS + categories + [c.replace("_", " ") for c in categories]
    pattern = re.compile(
        "|".join([rf"(?<![\w-]){re.escape(w)}(?![\w-])" for w in words])
        + rf"|\b1/{len(categories)}\b|{DEMO_FIGURE}",  # 1/6: the demo's chance level
        re.IGNORECASE,
    )
    hits = []
    for rel in sorted(tracked(repo)):
        if rel.startswith(("tests/", "data/benchmarks/")):
            continue
        try:
            lines = (repo / rel).read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            continue  # binary
        for number, line in enumerate(lines, 1):
            if pattern.search(line) and not any(rel == f and s in line for f, s in KNOWN_LEFTOVERS):
                hits.append(f"{rel}:{number}: {line.strip()[:160]}")
    return hits


def labels_of(answers: dict) -> list[str]:
    return [label.strip() for label in answers["labels"].split(",") if label.strip()]


def tracked(repo: Path) -> set[str]:
    return set(filter(None, run(["git", "ls-files", "-z"], repo, offline_env(repo)).stdout.split("\0")))


def excluded(rel: str, patterns: list[str]) -> bool:
    """template/exclude.txt semantics, written independently of the hook: last matching line wins."""
    verdict = False
    for pattern in patterns:
        pat = pattern.lstrip("!")
        if rel.startswith(pat) if pat.endswith("/") else fnmatch.fnmatchcase(rel, pat):
            verdict = not pattern.startswith("!")
    return verdict


def exclude_patterns(template_repo: Path) -> list[str]:
    lines = (template_repo / "template/exclude.txt").read_text().splitlines()
    return [p for p in (line.split(" #")[0].strip() for line in lines) if p and not p.startswith("#")]


def shared_files(template_repo: Path) -> set[str]:
    patterns = exclude_patterns(template_repo)
    return {rel for rel in tracked(template_repo) if not excluded(rel, patterns)}


def rendered_files(template_repo: Path) -> set[str]:
    root = template_repo / "template" / SLUG_DIR
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("template-repo"))


@pytest.fixture(scope="module")
def baked(template_repo, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("baked")
    for answers in ANSWERS.values():
        bake(template_repo, out, answers)
    return {name: out / slug for name, slug in SLUGS.items()}


# --- fast tier -------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("name", list(ANSWERS))
def test_exact_file_set(baked, template_repo, name):
    repo = baked[name]
    shared, rendered = shared_files(template_repo), rendered_files(template_repo)
    assert not shared & rendered, (
        f"rendered files shadow shared ones; add them to template/exclude.txt: {shared & rendered}"
    )
    params = yaml.safe_load((repo / "params.yaml").read_text())
    generated = {params["paths"][key] for key in ("raw_train", "raw_eval", "domain_text", "calibration")}
    expected = shared | rendered | generated | DVC_INIT_FILES | {LINK_FILE}
    assert tracked(repo) == expected
    assert run(["git", "status", "--porcelain"], repo, offline_env(repo)).stdout == ""  # nothing left uncommitted
    on_disk = {
        rel
        for rel in (p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
        if not rel.startswith((".git/", ".dvc/tmp/"))
    }  # git's and dvc's own state
    assert on_disk == expected
    # the pipeline itself came along: every module, test, workflow and stage definition of the template repo
    assert {f for f in tracked(template_repo) if f.startswith(("src/", ".github/", "configs/", "evals/"))} <= expected
    assert {"dvc.yaml", "params.yaml", "Makefile", "pyproject.toml"} <= expected


@pytest.mark.integration
@pytest.mark.parametrize("name", list(ANSWERS))
def test_shared_files_are_unchanged_copies(baked, template_repo, name):
    repo = baked[name]
    for rel in shared_files(template_repo) - {"params.yaml"}:
        assert (repo / rel).read_bytes() == (template_repo / rel).read_bytes(), rel
        assert os.access(repo / rel, os.X_OK) == os.access(template_repo / rel, os.X_OK), rel
    # params.yaml: same lines and comments, only the answered values differ
    src = (template_repo / "params.yaml").read_text().splitlines()
    dst = (repo / "params.yaml").read_text().splitlines()
    assert len(src) == len(dst)
    changed = [(a, b) for a, b in zip(src, dst, strict=True) if a != b]
    answered = {
        "model",
        "provider",
        "base_url",
        "domain_min",
        "regression_min_ratio",
        "uri",
        "mlflow_experiment",
        "registry_name",
        "labels",  # the closed label set
        "label_regex",  # the answer format
        "label_prefix",
    }
    for a, b in changed:
        assert a.split(":")[0] == b.split(":")[0] and a.split(":")[0].strip() in answered, (a, b)
        assert a.partition(" #")[2].strip() == b.partition(" #")[2].strip(), (a, b)  # comment kept
    assert changed, "no answer reached params.yaml"


@pytest.mark.integration
@pytest.mark.parametrize("name", list(ANSWERS))
def test_no_template_syntax_left(baked, template_repo, name):
    repo = baked[name]
    for rel in rendered_files(template_repo):
        text = (repo / rel).read_text(encoding="utf-8")
        assert not re.search(r"\{\{|\{%|\{#", text), rel
    cookiecutter_ref = re.compile(r"\{[{%#]-?\s*cookiecutter")
    for path in repo.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            assert not cookiecutter_ref.search(path.read_text(encoding="utf-8", errors="replace")), path


@pytest.mark.integration
@pytest.mark.parametrize("name", list(ANSWERS))
def test_answers_landed(baked, template_repo, name, monkeypatch):
    repo, answers = baked[name], ANSWERS[name]
    slug, labels = SLUGS[name], labels_of(answers)
    source = yaml.safe_load((template_repo / "params.yaml").read_text())  # what an empty answer keeps
    monkeypatch.chdir(repo)
    from llmops.config import load_params

    params = load_params()  # the baked params.yaml passes the pipeline's own validation
    assert params.base.model == (answers["base_model"] or source["base"]["model"])
    assert params.judge.provider == ("remote" if answers["judge_base_url"] else "local")
    assert (params.judge.base_url or "") == answers["judge_base_url"]
    assert params.judge.model == (answers["judge_model"] or source["judge"]["model"])
    rubric_name = "triage_quality"  # the pipeline's vocabulary (eval tasks triage_gen/mc): kept across domains
    assert params.judge.rubrics == [rubric_name]
    assert params.gate.domain_min == float(answers["gate_domain_min"] or source["gate"]["domain_min"])
    assert params.gate.regression_min_ratio == float(
        answers["gate_regression_min_ratio"] or source["gate"]["regression_min_ratio"]
    )
    assert (params.tracking.uri or "") == answers["mlflow_tracking_uri"]
    assert params.train.mlflow_experiment == slug
    assert params.deploy.registry_name == f"{slug}-adapter"
    assert params.prepare.labels == labels  # the answered label set is closed: prepare enforces it

    readme = (repo / "README.md").read_text()
    for text in (
        answers["project_name"],
        answers["domain_description"],
        "make demo",
        "make test",
        "cruft update",
        f"{slug}-adapter",
        *labels,
    ):
        assert text in readme, text
    # the expected verdict on the placeholder data follows the answered threshold against the promised tuned minimum
    minimums, verdict = readme_expectations(readme)
    promised = not answers["gate_domain_min"] or float(answers["gate_domain_min"]) <= minimums["triage_gen"]
    assert verdict == ("pass" if promised else "not promised"), readme
    rubric = yaml.safe_load((repo / f"prompts/rubrics/{rubric_name}.yaml").read_text())
    assert rubric["name"] == rubric_name and answers["domain_name"] in rubric["description"]
    assert all(label in " ".join(rubric["criteria"]) for label in labels)
    label_prefix, detail_prefix = answers.get("label_prefix", "Category"), answers.get("detail_prefix", "Action")
    acts = answers["task_kind"] == "classify_and_act"
    assert (detail_prefix.lower() in " ".join(rubric["criteria"]).lower()) == acts
    assert f'"{label_prefix}:' in " ".join(rubric["criteria"])
    system = (repo / "prompts/task/system.txt").read_text()
    assert answers["domain_description"] in system and all(label in system for label in labels)

    # the example data has the shape and size prepare demands, with exactly the answered labels
    regex = re.compile(params.prepare.label_regex)
    rows = {
        key: [json.loads(line) for line in (repo / getattr(params.paths, key)).read_text().splitlines()]
        for key in ("raw_train", "raw_eval", "domain_text", "calibration")
    }
    assert len(rows["raw_train"]) >= params.prepare.min_examples and len(rows["raw_eval"]) >= 40
    for key in ("raw_train", "raw_eval"):
        answers_text = [r["output"] if "output" in r else r["messages"][-1]["content"] for r in rows[key]]
        assert {regex.search(a).group(1) for a in answers_text} == set(labels)
        assert all(a.startswith(f"{label_prefix}: ") and (f"\n{detail_prefix}: " in a) == acts for a in answers_text)
    # the answer format is the bake's everywhere it is defined: params, eval tasks, prompts, data
    assert params.prepare.label_prefix == f"{label_prefix}:" and f'"{label_prefix}: <label>"' in system
    if label_prefix != "Category":
        defining = [repo / "params.yaml", *(repo / "evals").rglob("*.yaml"), *(repo / "prompts").rglob("*.*")]
        defining += [repo / getattr(params.paths, key) for key in ("raw_train", "raw_eval", "calibration")]
        left = [str(f.relative_to(repo)) for f in defining if "Category:" in f.read_text()]
        assert left == [], left
    assert len(rows["domain_text"]) >= 100 and all(r["text"].strip() for r in rows["domain_text"])
    assert {r["rubric"] for r in rows["calibration"]} == {rubric_name}
    assert {r["human_score"] for r in rows["calibration"]} == {1, 2, 3, 4, 5}  # kappa is defined

    remote = run(["dvc", "remote", "list"], repo, offline_env(repo)).stdout.split()
    assert remote == (["storage", answers["dvc_remote_url"], "(default)"] if answers["dvc_remote_url"] else [])


@pytest.mark.integration
@pytest.mark.parametrize("name", list(ANSWERS))
def test_git_repo_with_one_commit_and_dvc_pipeline(baked, name):
    repo = baked[name]
    env = offline_env(repo)
    assert run(["git", "rev-list", "--count", "HEAD"], repo, env).stdout.strip() == "1"
    assert run(["git", "branch", "--show-current"], repo, env).stdout.strip() == "main"
    stages = list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    # --force: on a fresh clone plain `--dry` stops at the first stage whose dependency is a not-yet-built
    # output (models/base), a DVC limitation (treeverse/dvc#9021); forced, it resolves and prints every stage.
    dry = run(["dvc", "repro", "--dry", "--force"], repo, env).stdout
    for stage in stages:
        assert f"Running stage '{stage}'" in dry, (stage, dry)
    # make help lists only what exists in the bake (bench/ stays in the template's repository)
    listed = [line.split()[0] for line in run(["make", "help"], repo, env).stdout.splitlines() if line.strip()]
    assert "demo" in listed and "template-update" in listed and "bench" not in listed
    # the real offline model is one command away in every bake (its profile validates against the baked params)
    assert (repo / "data/benchmarks/arc_easy.jsonl").is_file()
    assert "base.model=smollm2-135m-instruct" in run(["llmops", "profile", "smollm2"], repo, env).stdout


@pytest.mark.integration
def test_bake_without_dvc_then_make_initialises_it(template_repo, tmp_path):
    """cookiecutter run by an interpreter with no dvc beside it and none on PATH (the usual case before `make
    install`): the hook skips `dvc init` and says what happens next; the Makefile's .dvc target initialises it."""
    import site

    base_python = Path(sys.base_prefix) / "bin" / "python3"  # the venv's interpreter: no dvc script beside it
    env = bake_env(tmp_path)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not (Path(p) / "dvc").exists())
    env["PYTHONPATH"] = os.pathsep.join(site.getsitepackages())  # cookiecutter itself, from this venv
    answers = [f"{k}={v}" for k, v in CLAIMS.items()]
    cmd = [
        base_python,
        "-c",
        "from cookiecutter.cli import main; main()",
        "--no-input",
        template_repo,
        "--directory",
        "template",
        "--output-dir",
        tmp_path,
    ]
    proc = run([*cmd, *answers], cwd=tmp_path, env=env)
    repo = tmp_path / SLUGS["claims"]
    assert not (repo / ".dvc").exists() and "`make demo` (or `make test`) runs `dvc init`" in proc.stderr
    # -o install: this test's venv is shared; the target's own step (dvc init with the venv's dvc) is the subject
    make = ["make", "-o", "install", f"VENV={BIN.parent}"]
    made = run([*make, ".dvc"], cwd=repo, env=offline_env(repo))
    assert (repo / ".dvc/config").is_file() and "initialised DVC" in made.stdout
    assert run([*make, "-q", ".dvc"], cwd=repo, env=offline_env(repo), check=False).returncode == 0


@pytest.mark.integration
def test_tracking_uri_answer_is_used_and_env_still_wins(baked, monkeypatch):
    """The mlflow_tracking_uri answer lands in params.yaml `tracking.uri`, which llmops.tracking reads."""
    from llmops.config import load_params
    from llmops.errors import ConfigError
    from llmops.tracking import DEFAULT_TRACKING_URI, tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(baked["legal"])
    assert tracking_uri() == LEGAL["mlflow_tracking_uri"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert tracking_uri() == "sqlite:///elsewhere.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(baked["claims"])
    assert tracking_uri() == DEFAULT_TRACKING_URI
    params = Path("params.yaml")
    params.write_text(params.read_text().replace("  uri: null", "  uri: https://user:token@mlflow.example.com", 1))
    try:
        with pytest.raises(ConfigError, match="tracking.uri"):
            load_params()
    finally:
        run(["git", "checkout", "params.yaml"], baked["claims"], offline_env(baked["claims"]))


@pytest.mark.integration
def test_bad_answers_are_rejected_before_anything_is_written(template_repo, tmp_path):
    bad = {"labels": "auto,auto,bad label", "gate_domain_min": "2", "judge_base_url": "http://10.0.0.5:8000/v1"}
    proc = bake(template_repo, tmp_path, {**CLAIMS, **bad}, check=False)
    assert proc.returncode != 0
    assert "labels" in proc.stderr and "gate_domain_min" in proc.stderr
    assert "judge_base_url 'http://10.0.0.5:8000/v1': plain http:// would send the API key" in proc.stderr
    assert not (tmp_path / SLUGS["claims"]).exists()

    # a hosted judge's name without its endpoint: the local server answers only to 'base' / 'tuned'
    proc = bake(template_repo, tmp_path, {**CLAIMS, "judge_base_url": "", "judge_model": "gpt-4o-mini"}, check=False)
    assert proc.returncode != 0
    assert "judge_model 'gpt-4o-mini': with judge_base_url empty the judge is served locally" in proc.stderr
    assert not (tmp_path / SLUGS["claims"]).exists()


@pytest.mark.integration
def test_cruft_link_check_and_update(template_repo, tmp_path):
    """A plain cookiecutter bake is already linked (the same .cruft.json `cruft create` writes) and up to date;
    a later template commit (a shared file, a new pipeline file, a domain file of the template) arrives with
    `cruft update`, answers kept, no generation scaffolding (.git, .dvc) leaking in."""
    tpl = tmp_path / "tpl"
    shutil.copytree(template_repo, tpl)
    env = bake_env(tmp_path)
    answers = {**LEGAL, "dvc_remote_url": "/srv/dvc-store"}
    bake(tpl, tmp_path / "plain", answers)
    repo = tmp_path / "plain" / SLUGS["legal"]
    run([BIN / "cruft", "check"], repo, env)

    created = tmp_path / "created"
    created.mkdir()
    run(
        [BIN / "cruft", "create", "--no-input", "--directory", "template", "--extra-context", json.dumps(answers), tpl],
        created,
        env,
    )
    assert json.loads((repo / LINK_FILE).read_text()) == json.loads((created / SLUGS["legal"] / LINK_FILE).read_text())

    (tpl / "src/llmops/newstage.py").write_text('"""A stage added to the template after the bake."""\n')
    with open(tpl / "Makefile", "a") as fh:
        fh.write("# template improvement\n")
    system = tpl / "template" / SLUG_DIR / "prompts/task/system.txt"
    system.write_text(system.read_text().replace("Reply with", "Answer with"))
    run(["git", "add", "-A"], tpl, env)
    run(["git", "commit", "-qm", "Improve the template"], tpl, env)
    assert run([BIN / "cruft", "check"], repo, env, check=False).returncode != 0  # out of date now

    run([BIN / "cruft", "update", "--skip-apply-ask"], repo, env)
    assert (repo / "src/llmops/newstage.py").is_file()
    assert (repo / "Makefile").read_text().endswith("# template improvement\n")
    assert "Answer with" in (repo / "prompts/task/system.txt").read_text()
    assert yaml.safe_load((repo / "params.yaml").read_text())["deploy"]["registry_name"] == "legal-tags-adapter"
    assert run(["dvc", "remote", "list"], repo, env).stdout.split() == ["storage", "/srv/dvc-store", "(default)"]
    status = run(["git", "status", "--porcelain"], repo, env).stdout
    assert ".git/" not in status and ".dvc/" not in status, status
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "Template update"], repo, env)
    run([BIN / "cruft", "check"], repo, env)


@pytest.mark.integration
def test_no_demo_text_in_a_bake_for_another_domain(template_repo, tmp_path):
    """Issue #13: a legal-clause bake must not read like the telecom demo (its words, labels, chance level or
    figures) anywhere a user reads: READMEs, eval and config comments, params, prompts, placeholder data."""
    bake(template_repo, tmp_path, CLAUSES)
    hits = demo_leftovers(tmp_path / CLAUSES["project_slug"], template_repo / "data/make_demo_data.py")
    assert not hits, "demo text in the bake:\n" + "\n".join(hits)


def linked_bake(template_repo: Path, tmp: Path) -> tuple[Path, Path, dict[str, str]]:
    """A template repository copy and a plain cookiecutter bake of it (linked by its .cruft.json), plus the
    bake's own work committed on top: (template copy, baked repo, env)."""
    tpl = tmp / "tpl"
    shutil.copytree(template_repo, tpl)
    env = bake_env(tmp, TERM="dumb", NO_COLOR="1", COLUMNS="200")
    bake(tpl, tmp / "out", CLAUSES)
    repo = tmp / "out" / CLAUSES["project_slug"]
    with open(repo / "README.md", "a") as fh:
        fh.write("\nOur team's notes.\n")
    (repo / "NOTES.md").write_text("a file of the project's own\n")
    with open(repo / "data/raw/train.jsonl", "a") as fh:  # real data replacing the placeholders (cruft skips it)
        fh.write('{"input": "Either party may end this agreement.", "output": "Category: termination"}\n')
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "Our own work"], repo, env)
    return tpl, repo, env


def improve_template(tpl: Path, env: dict[str, str], line: str) -> str:
    """Commit a template change: a shared file (Makefile) and a rendered domain file (the system prompt)."""
    with open(tpl / "Makefile", "a") as fh:
        fh.write(f"# {line}\n")
    system = tpl / "template" / SLUG_DIR / "prompts/task/system.txt"
    system.write_text(system.read_text().rstrip("\n") + f" ({line})\n")
    run(["git", "add", "-A"], tpl, env)
    run(["git", "commit", "-qm", line], tpl, env)
    return run(["git", "rev-parse", "HEAD"], tpl, env).stdout.strip()


def assert_updated(repo: Path, line: str, commit: str, output: str) -> None:
    assert (repo / "Makefile").read_text().endswith(f"# {line}\n")
    assert (repo / "prompts/task/system.txt").read_text().endswith(f" ({line})\n")
    assert json.loads((repo / LINK_FILE).read_text())["commit"] == commit
    # the project's own work stays
    assert (repo / "README.md").read_text().endswith("Our team's notes.\n") and (repo / "NOTES.md").is_file()
    assert "Either party may end" in (repo / "data/raw/train.jsonl").read_text()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["deploy"]["registry_name"] == f"{CLAUSES['project_slug']}-adapter"
    assert not list(repo.rglob("*.rej")), "conflicts"
    # the hook ran twice (old and new commit) and said nothing
    for printed in (": ready. Next:", "After `cruft create`", "dvc is not installed"):
        assert printed not in output, output


@pytest.mark.slow
def test_cruft_update_from_a_newer_template_checkout(template_repo, tmp_path):
    """`cruft update --template-path <newer copy> -y` with the original template gone: the hook renders both
    commits from cruft's clone of the newer copy, never re-fetching `.cruft.json`'s template URL. Then the
    README's re-pointing step (edit .cruft.json's "template") makes plain `cruft check` / `update` work again."""
    tpl, repo, env = linked_bake(template_repo, tmp_path)
    newer = tmp_path / "newer"
    run(["git", "clone", "-q", tpl, newer], tmp_path, env)
    commit = improve_template(newer, env, "improved in the newer checkout")
    shutil.rmtree(tpl)  # the URL the bake was made from is gone (moved, renamed, or a fork replaced it)

    # the documented command checks what cruft would die on with a git traceback: a plain folder, a wrong checkout
    make = ["make", "template-update", f"VENV={BIN.parent}"]
    plain = tmp_path / "unzipped"
    shutil.copytree(newer, plain, ignore=shutil.ignore_patterns(".git"))
    unrelated = tmp_path / "unrelated"
    run(["git", "init", "-q", unrelated], tmp_path, env)
    for folder, says in ((plain, "is not a git checkout"), (unrelated, "does not hold commit")):
        proc = run([*make, f"TEMPLATE={folder}"], repo, env, check=False)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not run(["git", "status", "--porcelain"], repo, env).stdout  # nothing touched

    proc = run([*make, f"TEMPLATE={newer}", "ARGS=--skip-apply-ask"], repo, env)
    assert_updated(repo, "improved in the newer checkout", commit, proc.stdout + proc.stderr)
    status = run(["git", "status", "--porcelain"], repo, env).stdout.splitlines()
    assert sorted(line[3:] for line in status) == [LINK_FILE, "Makefile", "prompts/task/system.txt"], status

    state = json.loads((repo / LINK_FILE).read_text())
    state["template"] = state["context"]["cookiecutter"]["_template"] = str(newer)
    (repo / LINK_FILE).write_text(json.dumps(state, indent=2) + "\n")
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "Template update; the template now lives in newer/"], repo, env)
    run([BIN / "cruft", "check"], repo, env)
    commit = improve_template(newer, env, "improved again")
    proc = run([BIN / "cruft", "update", "-y"], repo, env)
    assert_updated(repo, "improved again", commit, proc.stdout + proc.stderr)


def run_in_terminal(cmd: list, cwd: Path, env: dict[str, str], replies: dict[str, str], timeout=300):
    """Run cmd on a pseudo-terminal, as at an interactive shell, typing each reply once its prompt shows.
    Returns (exit code, everything the terminal showed)."""
    import pty
    import select

    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdin=child_fd, stdout=child_fd, stderr=child_fd)
    os.close(child_fd)
    shown, pending, deadline = b"", dict(replies), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([main_fd], [], [], 1)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            for prompt, reply in list(pending.items()):
                if prompt.encode() in shown:
                    os.write(main_fd, reply.encode() + b"\r")
                    del pending[prompt]
        else:
            proc.kill()
            raise AssertionError(f"{cmd} did not finish in {timeout} s:\n{shown.decode(errors='replace')}")
    finally:
        os.close(main_fd)
    return proc.wait(timeout=30), shown.decode(errors="replace")


@pytest.mark.slow
def test_cruft_update_interactive(template_repo, tmp_path):
    """Plain interactive `cruft update`, answering its "Apply diff and update?" prompt on a terminal (typer 0.29
    crashed there with an AssertionError: pyproject.toml pins typer below it)."""
    tpl, repo, env = linked_bake(template_repo, tmp_path)
    commit = improve_template(tpl, env, "improved upstream")
    code, shown = run_in_terminal([BIN / "cruft", "update"], repo, env, {"Apply diff and update?": "y"})
    assert code == 0 and "Traceback" not in shown and "AssertionError" not in shown, shown
    assert "Apply diff and update?" in shown, shown
    assert_updated(repo, "improved upstream", commit, shown)


# --- S3 remote against moto_server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto_server on loopback with the bucket the CLAIMS answer names; yields (endpoint, env, bucket)."""
    bucket = CLAIMS["dvc_remote_url"].removeprefix("s3://").split("/")[0]
    with moto_s3(tmp_path_factory.mktemp("moto"), bucket) as (endpoint, env):
        yield endpoint, {**env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}, bucket


def point_at(repo: Path, endpoint: str) -> None:
    """The endpoint goes in the git-ignored .dvc/config.local: a test server is never committed."""
    run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", endpoint], repo, offline_env(repo))


def bucket_keys(endpoint: str, bucket: str) -> list[str]:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.mark.integration
def test_s3_remote_answer_pushes_and_pulls(template_repo, tmp_path, s3_server):
    endpoint, creds, bucket = s3_server
    bake(template_repo, tmp_path, CLAIMS)
    repo = tmp_path / SLUGS["claims"]
    env = offline_env(repo, **creds)
    point_at(repo, endpoint)
    assert "endpointurl" not in (repo / ".dvc/config").read_text()
    assert run(["git", "status", "--porcelain"], repo, env).stdout == ""  # config.local is ignored
    blob = repo / "data/blob.bin"
    blob.write_bytes(os.urandom(4096))
    expected = blob.read_bytes()
    run(["dvc", "add", "data/blob.bin"], repo, env)
    run(["dvc", "push", "data/blob.bin.dvc"], repo, env)  # targeted: the pipeline has not run, nothing else exists
    keys = bucket_keys(endpoint, bucket)
    assert keys and all(k.startswith("claims/") for k in keys), keys  # under the answered path
    blob.unlink()
    shutil.rmtree(repo / ".dvc/cache")
    run(["dvc", "pull", "data/blob.bin.dvc"], repo, env)
    assert blob.read_bytes() == expected


# --- slow tier: the baked repository's own tests and pipeline --------------------------------------------


def baked_env(repo: Path, **extra: str) -> dict[str, str]:
    """Run the baked copy of llmops (its src/ first on the path) with this venv's packages."""
    return offline_env(repo, PYTHONPATH=str(repo / "src"), **extra)


@pytest.mark.slow
def test_baked_repo_fast_test_suite_passes(baked):
    repo = baked["claims"]
    proc = run(
        [sys.executable, "-m", "pytest", "-m", "not slow", "-q", "-x", "-p", "no:cacheprovider"],
        repo,
        baked_env(repo),
        check=False,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\d+ passed", proc.stdout), proc.stdout[-2000:]
    print(proc.stdout.strip().splitlines()[-1])


def readme_expectations(readme: str) -> tuple[dict[str, float], str]:
    """The baked README's "Expected result" table: {task: the tuned score it promises at least}, and the verdict."""
    section = readme.split("## Expected result of `make demo`", 1)[1].split("\n## ", 1)[0]
    minimums = {
        m["task"]: float(m["min"])
        for m in re.finditer(r"^\| `(?P<task>\w+)` \|.*\| >= (?P<min>[01]\.\d+) \|$", section, re.MULTILINE)
    }
    verdict = re.search(r"^Gate: \*\*([\w ]+)\*\*", section, re.MULTILINE)
    assert minimums and verdict, f"no expected-result table or gate line in the baked README:\n{section}"
    return minimums, verdict.group(1)


@pytest.mark.slow
def test_baked_repo_full_dvc_repro_then_push_and_pull(template_repo, tmp_path, s3_server):
    """A bake with labels other than the template's default (issue #13's five legal-clause types): the whole
    pipeline on the tiny default, the figures its README promises, the gate passing, then the outputs
    round-trip the S3 remote."""
    endpoint, creds, _ = s3_server
    bake(template_repo, tmp_path / "out", {**CLAUSES, "dvc_remote_url": "s3://llmops-test/clauses"})
    repo = tmp_path / "out" / CLAUSES["project_slug"]
    env = baked_env(repo, **creds)
    started = time.time()
    run(["dvc", "repro"], repo, env, timeout=1800)
    elapsed = time.time() - started
    data = json.loads((repo / "reports/data.json").read_text())
    assert data["train"]["final"] >= 50 and data["eval"]["final"] >= 40
    assert sorted(data["labels"]) == sorted(labels_of(CLAUSES))
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert "Data and pipelines are up to date" in run(["dvc", "repro"], repo, env).stdout
    for report in sorted((repo / "reports").glob("*.json")):
        print(report.name, report.read_text()[:300].replace("\n", " "))
    print(f"full dvc repro of {len(stages)} stages: {elapsed:.0f} s")

    # what the baked README says a working bake shows is what this bake shows
    minimums, verdict = readme_expectations((repo / "README.md").read_text())
    tasks = json.loads((repo / "reports/eval_compare.json").read_text())["tasks"]
    assert set(minimums) == set(tasks), (minimums, sorted(tasks))
    for task, minimum in minimums.items():
        assert tasks[task]["tuned"] >= minimum, (task, tasks[task], minimum)
    gate = run(["llmops", "gate"], repo, env, check=False)
    assert (verdict, gate.returncode) == ("pass", 0), gate.stdout[-3000:] + gate.stderr[-2000:]

    point_at(repo, endpoint)
    run(["dvc", "push"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "First pipeline run"], repo, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", repo, clone], tmp_path, env)
    point_at(clone, endpoint)
    run(["dvc", "pull"], clone, baked_env(clone, **creds))
    assert (clone / yaml.safe_load((repo / "params.yaml").read_text())["paths"]["adapter_dir"]).is_dir()
    status = run(["dvc", "status"], clone, baked_env(clone, **creds)).stdout
    assert "up to date" in status, status
