"""The branch state CI shares through the DVC remote: a branch's dvc.lock plus the outputs DVC keeps out of its cache.

Run:  python -m llmops.ci publish --branch main --commit <sha>   (default-branch CI, after `dvc push --run-cache`)
      python -m llmops.ci publish --commit <sha>                 (merge-queue CI: this commit's state only)
      python -m llmops.ci restore --branch main --keep reports/ci/base --commit <sha>   (before `dvc repro --pull`;
                          the copy in reports/ci/base is what the report compares with)

Why: CI never commits back, so the committed dvc.lock describes a developer's machine, not what CI built and
pushed. The run-cache restores most stages by their deps and params alone, but not a stage with a `persist`
output (judge) and not the `cache: false` metrics that live in git. Publishing the default branch's lock and
those files next to the DVC cache lets the next PR start from exactly what main built: stages whose deps and
params match are pulled, not rerun. The objects themselves are DVC's (`dvc push`); this is ~100 KB of text.

Reuse after a merge: the merge queue's build of a commit (a trusted job: reviewed code, the write environment)
publishes that commit's state; main's build of the same commit restores it, so nothing reruns, the judge included.
`restore` also fetches the remote's run-cache entries (`dvc repro --pull` consults only the runner's local
run-cache: dvc's StageCache._load) and `publish` pushes the objects of their `cache: false` outputs, which `dvc push
--run-cache` leaves behind: without both, a stage another trusted build already ran reran on a fresh runner (why
main once missed a PR's training; docs/gate-ci-deploy.md). Only trusted jobs write either (docs/gate-ci-deploy.md,
"Credentials").
Credentials: whatever the remote's DVC config reads (AWS_* env vars for S3); nothing is logged.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
from pathlib import Path

from llmops.ci_report import COMMIT_NOTE
from llmops.errors import StageError

STATE_DIR = "llmops-state"  # under the remote's URL, beside DVC's files/ and runs/
LOCK = "dvc.lock"


def _remote():
    from dvc.repo import Repo

    repo = Repo(".")
    try:
        remote = repo.cloud.get_remote(command="llmops.ci")
    except Exception as exc:  # noqa: BLE001 - dvc's NoRemoteError / RemoteConfigError: one line for CI
        raise StageError(f"DVC remote: {exc}") from None
    return repo, remote.fs, remote.path


def _key(fs, root: str, branch: str) -> str:
    return fs.join(root, STATE_DIR, urllib.parse.quote(branch, safe="") + ".tar.gz")


def _commit_key(fs, root: str, sha: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{7,64}", sha):
        raise StageError(f"--commit {sha!r}: not a git commit sha")
    return fs.join(root, STATE_DIR, "commits", sha + ".tar.gz")


def uncached_outs(repo) -> list[str]:
    """Repository-relative paths of the stage outputs DVC does not cache (metrics/plots with cache: false)."""
    root = Path(repo.root_dir)
    return sorted(
        {
            str(Path(out.fs_path).relative_to(root))
            for stage in repo.index.stages
            for out in stage.outs
            if not out.use_cache
        }
    )


def push_run_cache_objects(repo) -> int:
    """Upload the objects of this runner's run-cache entries that `dvc push --run-cache` leaves behind: those of
    `cache: false` outputs (metrics, plots). DVC 3 pushes by the workspace's index, where they are not cached, so
    another runner finds the entry but cannot restore the stage ("Some of the cache files do not exist neither
    locally nor on remote") and reruns it: measured in tests/test_workflow_sim.py. Only objects present here."""
    runs = Path(repo.stage_cache.cache_dir)
    entries = [(key.name, value.name) for key in runs.glob("*/*") for value in key.iterdir()] if runs.is_dir() else []
    used = repo.stage_cache.get_used_objs(entries)
    objs = {
        h
        for hashes in used.values()
        for h in hashes
        if any(odb.exists(h.value) for odb in (repo.cache.local, repo.cache.legacy))
    }
    result = repo.cloud.push(objs)
    if result.failed:
        raise StageError(f"run-cache objects: {len(result.failed)} of {len(objs)} could not be pushed")
    return len(objs)


def publish(branch: str | None, commit: str | None = None) -> dict:
    """Store dvc.lock + the uncached outputs as the branch's state and/or as this commit's state (and the objects
    of the run-cache entries that `dvc push --run-cache` did not upload)."""
    if not branch and not commit:
        raise StageError("publish: name a --branch, a --commit, or both")
    repo, fs, root = _remote()
    print(f"pushed the {push_run_cache_objects(repo)} objects of this runner's run-cache entries")
    if not Path(LOCK).is_file():
        raise StageError(f"{LOCK}: missing; run `dvc repro` before publishing")
    files = [LOCK, *(p for p in uncached_outs(repo) if Path(p).is_file())]
    keys = ([_key(fs, root, branch)] if branch else []) + ([_commit_key(fs, root, commit)] if commit else [])
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "state.tar.gz"
        with tarfile.open(bundle, "w:gz") as tar:
            for rel in files:
                tar.add(rel, arcname=rel, recursive=False)
        for key in keys:
            fs.put_file(str(bundle), key)
    named = " and ".join([f"branch {branch!r}"] * bool(branch) + [f"commit {commit}"] * bool(commit))
    print(f"published {len(files)} files as the state of {named}: {', '.join(files)}")
    return {"branch": branch, "commit": commit, "files": files}


def _unpack(repo, fs, key: str) -> tuple[list[str], list[str]]:
    """Extract a published state over the checkout: only dvc.lock and this dvc.yaml's uncached outputs."""
    allowed = {LOCK, *uncached_outs(repo)}
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "state.tar.gz"
        fs.get_file(key, str(local))
        data = local.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name in allowed]
        skipped = sorted(m.name for m in tar.getmembers() if m not in members)
        tar.extractall(".", members=members, filter="data")
    return [m.name for m in members], skipped


def fetch_run_cache(repo) -> int:
    """Copy the remote's run-cache entries (small YAML files, not their outputs) into the local cache, so that
    `dvc repro --pull` restores any stage a trusted build already ran with the same deps, params and command.
    `dvc fetch --run-cache` would also download every output every entry ever recorded."""
    try:
        return len(repo.stage_cache.pull(None))
    except Exception as exc:  # noqa: BLE001 - a remote without a run-cache (http) or unreadable: reuse less, say so
        print(f"run-cache entries not fetched ({type(exc).__name__}): stages rerun unless the lock matches")
        return 0


def restore(branch: str, keep: Path | None = None, commit: str | None = None) -> dict:
    """Unpack the branch's published state over the checkout; nothing published yet is not an error. With `keep`,
    also keep a copy of it and the branch's tuned eval samples there, for the report (llmops.base_branch). Then
    fetch the run-cache entries, and with `commit`, unpack the state a trusted build of that very commit published
    (the merge queue's), if any, over the branch's: every stage it built is then unchanged here."""
    repo, fs, root = _remote()
    key = _key(fs, root, branch)
    names: list[str] = []
    if not fs.exists(key):
        print(f"no published state for {branch!r} yet: the committed dvc.lock is the starting point")
        if keep is not None:
            unavailable(keep, f"{branch!r} has published no state yet (its CI has not pushed a build)")
    else:
        names, skipped = _unpack(repo, fs, key)
        print(
            f"restored the state of {branch!r}: {', '.join(names)}"
            + (f" (ignored, not an output of this dvc.yaml: {', '.join(skipped)})" if skipped else "")
        )
        if keep is not None:
            keep_snapshot(repo, branch, names, keep)
    print(f"fetched {fetch_run_cache(repo)} run-cache entries")
    restored_commit = None
    if commit:
        ckey = _commit_key(fs, root, commit)
        if fs.exists(ckey):
            names, _ = _unpack(repo, fs, ckey)
            restored_commit = commit
            COMMIT_NOTE.parent.mkdir(parents=True, exist_ok=True)
            COMMIT_NOTE.write_text(
                f"started from the state a trusted build of this very commit ({commit[:12]}) published, "
                "e.g. the merge queue's\n",
                encoding="utf-8",
            )
            print(f"restored the state a trusted build of commit {commit} published: {', '.join(names)}")
    return {"branch": branch, "files": names, "commit": restored_commit}


def unavailable(keep: Path, why: str) -> None:
    from llmops.base_branch import UNAVAILABLE

    keep.mkdir(parents=True, exist_ok=True)
    (keep / UNAVAILABLE).write_text(why + "\n", encoding="utf-8")


def keep_snapshot(repo, branch: str, files: list[str], keep: Path) -> None:
    """Copy the restored files and the branch's tuned eval samples (pulled by its dvc.lock) into `keep`: what the
    report compares this run with, since `dvc repro` is about to replace them in the workspace."""
    from llmops.config import load_params

    keep.mkdir(parents=True, exist_ok=True)
    for rel in files:
        (keep / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(rel, keep / rel)
    samples = load_params().paths.report("eval_samples") / "tuned"
    try:
        repo.pull(targets=[samples.as_posix()])
        shutil.copytree(samples, keep / samples, dirs_exist_ok=True)
    except Exception as exc:  # noqa: BLE001 - DVC's errors for a missing object or an unreadable remote: one line
        unavailable(keep, f"the tuned eval samples {branch!r} published could not be pulled: {type(exc).__name__}")
        print(f"kept {branch!r}'s published metrics; its eval samples could not be pulled ({type(exc).__name__})")
        return
    print(f"kept {branch!r}'s published state and tuned eval samples in {keep} for the report")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["publish", "restore"])
    parser.add_argument("--branch", help="branch whose state to publish or restore, e.g. main")
    parser.add_argument("--commit", help="publish: also as this commit's state; restore: then this commit's, if any")
    parser.add_argument("--keep", type=Path, help="restore: also keep a copy (+ its tuned eval samples) here")
    args = parser.parse_args(argv)
    if args.action == "restore" and not args.branch:
        parser.error("restore needs --branch")
    try:
        if args.action == "publish":
            publish(args.branch, args.commit)
        else:
            restore(args.branch, args.keep, args.commit)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
