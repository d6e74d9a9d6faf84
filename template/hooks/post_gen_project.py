"""Turn the rendered domain files into a complete repository (cookiecutter/cruft run this in the new project).

1. Copy the shared pipeline from the template's repository: every file git lists there (src/, tests/, dvc.yaml,
   params.yaml, Makefile, workflows, general evals ...) except template/exclude.txt. The pipeline exists once,
   in the template repository; nothing here lists its files, so a stage added there is inherited.
2. Fill params.yaml from the answers by editing single lines (its comments are the documentation).
3. Write the placeholder domain data (data/make_example_data.py).
4. Plain cookiecutter: write .cruft.json as `cruft create` would (template, commit, answers), so every
   generated repository can take template updates with `cruft update`.
5. git init, dvc init, `dvc remote add -d` when a remote was given, first commit.

Where the template repository is: the folder being rendered, which template/llmops_template_context.py (a
cookiecutter extension) names: a local working tree or cookiecutter's clone under ~/.cookiecutters, or cruft's
clone checked out at the commit it renders. Never a fresh clone of `_template`: `cruft update --template-path`
renders a commit that URL may not have.

`cruft update` (and `cruft diff`) run this hook twice, once per rendered commit, into throw-away folders: it does
the same work then (the two renders must differ only by the template change) but prints nothing.
"""

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml  # cookiecutter depends on PyYAML, so it is importable wherever the hook runs

ANSWERS = json.loads({{ cookiecutter | jsonify | tojson }})
PROJECT = Path.cwd()
TEMPLATE = Path({{ llmops_template_dir | tojson }})  # the template folder being rendered (cookiecutter.json's)
REGENERATING = {{ "True" if llmops_regenerating else "False" }}  # under `cruft update`/`cruft diff`: stay quiet


def sh(*cmd, cwd=PROJECT, check=True):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode:
        sys.exit(f"post-generation hook: `{' '.join(map(str, cmd))}` failed ({proc.returncode}):\n"
                 f"{proc.stdout}{proc.stderr}")
    return proc


def git_files(root, untracked):
    args = ["git", "ls-files", "-z"] + (["-co", "--exclude-standard"] if untracked else [])
    return [f for f in sh(*args, cwd=root).stdout.split("\0") if f]


def source_tree():
    """(repository root, files to consider) of the template this project is rendered from."""
    root = TEMPLATE.parent  # template/ sits at the top of the pipeline's repository
    top = sh("git", "rev-parse", "--show-toplevel", cwd=root, check=False)
    if top.returncode == 0 and Path(top.stdout.strip()).resolve() == root.resolve():
        # cruft renders a recorded commit: its clone's tracked files exactly. A local working tree under plain
        # cookiecutter: uncommitted, unignored files too (what you see is what you bake).
        return root, git_files(root, untracked=bool(ANSWERS.get("_repo_dir")))
    # e.g. an unpacked zip: no git, take every file
    skip = {".git", "__pycache__"}  # __pycache__: Python's import of the template's extension module
    return root, [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not skip & set(p.parts)]


def read_patterns(path):
    patterns = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            patterns.append(line)
    return patterns


def excluded(rel, patterns):
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        hit = rel.startswith(pat) if pat.endswith("/") else fnmatch.fnmatchcase(rel, pat)
        if hit:
            verdict = not negate
    return verdict


def cruft_state(root, template_dir):
    """What `cruft create` records in .cruft.json, so a plain cookiecutter bake takes `cruft update` too."""
    if not ANSWERS.get("_repo_dir"):
        return None  # under cruft, which writes .cruft.json itself after this hook
    head = sh("git", "rev-parse", "HEAD", cwd=root, check=False)
    if head.returncode:
        return None  # not baked from a git repository: nothing to link to
    if sh("git", "status", "--porcelain", cwd=root).stdout.strip():
        print(f"warning: {root} has uncommitted changes; .cruft.json records its last commit, so a later "
              "`cruft update` may show them as conflicts", file=sys.stderr)
    template = ANSWERS["_template"]
    if Path(template).expanduser().is_dir():
        template = str(Path(template).expanduser().resolve())
    else:  # gh:org/repo and friends: cruft needs the URL git can clone
        from cookiecutter.config import BUILTIN_ABBREVIATIONS
        from cookiecutter.repository import expand_abbreviations

        template = expand_abbreviations(template, BUILTIN_ABBREVIATIONS)
    commit = head.stdout.strip()
    top = sh("git", "rev-parse", "--show-toplevel", cwd=root).stdout.strip()  # cruft clones the whole repository
    declared = json.loads((TEMPLATE / "cookiecutter.json").read_text(encoding="utf-8"))  # `_extensions` too
    answers = {k: v for k, v in ANSWERS.items() if not k.startswith("_") or k in declared}
    answers.update(_template=template, _commit=commit)
    return {"template": template, "commit": commit, "checkout": ANSWERS.get("_checkout"),
            "context": {"cookiecutter": answers},
            "directory": Path(template_dir).resolve().relative_to(Path(top).resolve()).as_posix()}


def copy_pipeline():
    root, files = source_tree()
    state = cruft_state(root, TEMPLATE)
    if state:  # cruft's own format (cruft/_commands/utils/cruft.py json_dumps)
        (PROJECT / ".cruft.json").write_text(
            json.dumps(state, ensure_ascii=False, indent=2, separators=(",", ": ")) + "\n", encoding="utf-8")
    patterns = read_patterns(TEMPLATE / "exclude.txt")
    for rel in sorted(files):
        src, dest = root / rel, PROJECT / rel
        if excluded(rel, patterns) or not (src.is_file() or src.is_symlink()):
            continue
        if dest.exists():  # rendered for the domain by the template: that version wins
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest, follow_symlinks=False)


def _split_comment(rest):
    """'value   # comment' -> ('value', '   # comment'), quotes respected."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            j = i
            while j and rest[j - 1] in " \t":
                j -= 1
            return rest[:j], rest[j:]
    return rest.rstrip(), ""


def set_param(text, dotted, value):
    """Replace one `section.key` scalar in params.yaml text, keeping its comment (and column) intact."""
    section, key = dotted.split(".")
    lines = text.splitlines(keepends=True)
    inside = False
    for i, line in enumerate(lines):
        if re.match(r"^\S", line) and not line.startswith("#"):
            inside = line.startswith(f"{section}:")
            continue
        m = re.match(rf"^(  {re.escape(key)}:\s*)(.*?)(\r?\n)?$", line)
        if inside and m:
            old, comment = _split_comment(m.group(2))
            new = yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()
            if comment:
                comment = " " * max(1, len(old) + len(comment) - len(comment.lstrip()) - len(new)) + comment.lstrip()
            lines[i] = m.group(1) + new + comment + (m.group(3) or "")
            return "".join(lines)
    sys.exit(f"post-generation hook: params.yaml has no key {dotted} (the template and params.yaml disagree)")


def fill_params():
    slug = ANSWERS["project_slug"]
    values = {
        "judge.provider": "remote" if ANSWERS["judge_base_url"] else "local",
        "judge.base_url": ANSWERS["judge_base_url"] or None,
        "train.mlflow_experiment": slug,
        "tracking.uri": ANSWERS["mlflow_tracking_uri"] or None,
        "deploy.registry_name": f"{slug}-adapter",
        # the label set answered at bake is closed: prepare refuses any other label, naming its line
        "prepare.labels": [label.strip() for label in ANSWERS["labels"].split(",") if label.strip()],
        # the answer format: where prepare and triage_gen read the label, and what triage_mc scores it after
        "prepare.label_prefix": f"{ANSWERS['label_prefix'].strip()}:",
        "prepare.label_regex": re.escape(f"{ANSWERS['label_prefix'].strip()}:").replace("\\ ", " ")
        + r"\s*([A-Za-z0-9_\-]+)",
    }
    # Empty answers keep params.yaml's own value: defaults live there once, not again in cookiecutter.json.
    for dotted, key, cast in (("base.model", "base_model", str), ("judge.model", "judge_model", str),
                              ("gate.domain_min", "gate_domain_min", float),
                              ("gate.regression_min_ratio", "gate_regression_min_ratio", float)):
        if ANSWERS[key].strip():
            values[dotted] = cast(ANSWERS[key].strip())
    path = PROJECT / "params.yaml"
    text = path.read_text(encoding="utf-8")
    for dotted, value in values.items():
        text = set_param(text, dotted, value)
    parsed = yaml.safe_load(text)
    for dotted, value in values.items():  # the line edits must mean exactly what was asked
        section, key = dotted.split(".")
        assert parsed[section][key] == value, (dotted, parsed[section][key], value)
    path.write_text(text, encoding="utf-8")


def dvc_executable():
    for candidate in (Path(sys.executable).parent / "dvc", shutil.which("dvc")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def init_repositories():
    if sh("git", "init", "-q", "-b", "main", check=False).returncode:  # git < 2.28 has no -b
        sh("git", "init", "-q")
        sh("git", "symbolic-ref", "HEAD", "refs/heads/main")
    dvc = dvc_executable()
    if dvc:
        sh(dvc, "init", "-q")
        if ANSWERS["dvc_remote_url"]:
            sh(dvc, "remote", "add", "-d", "storage", ANSWERS["dvc_remote_url"])
    elif not REGENERATING:
        print("post-generation hook: dvc is not installed beside this cookiecutter; `make demo` (or `make test`) "
              "runs `dvc init` after installing it"
              + (f"; then add the remote: .venv/bin/dvc remote add -d storage {ANSWERS['dvc_remote_url']}"
                 if ANSWERS["dvc_remote_url"] else "")
              + "; commit .dvc/ afterwards.", file=sys.stderr)
    identity = []
    if sh("git", "var", "GIT_COMMITTER_IDENT", check=False).returncode:  # no git identity configured
        identity = ["-c", "user.name=llmops template", "-c", "user.email=template@example.invalid"]
    sh("git", "add", "-A")
    sh("git", *identity, "commit", "-q", "-m", f"New {ANSWERS['domain_name']} project from the llmops template")


def main():
    copy_pipeline()
    fill_params()
    sh(sys.executable, "data/make_example_data.py")
    init_repositories()
    if REGENERATING:
        return
    print(f"\n{PROJECT.name}: ready. Next: cd {PROJECT.name} && make demo   (then make test)")
    if ANSWERS.get("_commit"):  # cruft writes .cruft.json after this hook, so the first commit cannot hold it
        print("After `cruft create`: git add .cruft.json && git commit -m 'Link to the template'")


main()
