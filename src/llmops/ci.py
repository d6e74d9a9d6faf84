"""The branch state CI shares through the DVC remote: a branch's dvc.lock plus the outputs DVC keeps out of its cache.

Run:  python -m llmops.ci publish --branch main   (default-branch CI, after `dvc repro` and `dvc push --run-cache`)
      python -m llmops.ci restore --branch main --keep reports/ci/base   (PR CI, before `dvc repro --pull`; the copy
                                                  in reports/ci/base is what the report compares with)

Why: CI never commits back, so the committed dvc.lock describes a developer's machine, not what CI built and
pushed. The run-cache restores most stages by their deps and params alone, but not a stage with a `persist`
output (judge) and not the `cache: false` metrics that live in git. Publishing the default branch's lock and
those files next to the DVC cache lets the next PR start from exactly what main built: stages whose deps and
params match are pulled, not rerun. The objects themselves are DVC's (`dvc push`); this is ~100 KB of text.
Credentials: whatever the remote's DVC config reads (AWS_* env vars for S3); nothing is logged.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
from pathlib import Path

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


def publish(branch: str) -> dict:
    repo, fs, root = _remote()
    if not Path(LOCK).is_file():
        raise StageError(f"{LOCK}: missing; run `dvc repro` before publishing")
    files = [LOCK, *(p for p in uncached_outs(repo) if Path(p).is_file())]
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "state.tar.gz"
        with tarfile.open(bundle, "w:gz") as tar:
            for rel in files:
                tar.add(rel, arcname=rel, recursive=False)
        key = _key(fs, root, branch)
        fs.put_file(str(bundle), key)
    print(f"published {len(files)} files as the state of {branch!r}: {', '.join(files)}")
    return {"branch": branch, "files": files}


def restore(branch: str, keep: Path | None = None) -> dict:
    """Unpack the branch's published state over the checkout; nothing published yet is not an error. With `keep`,
    also keep a copy of it and the branch's tuned eval samples there, for the report (llmops.base_branch)."""
    repo, fs, root = _remote()
    key = _key(fs, root, branch)
    if not fs.exists(key):
        print(f"no published state for {branch!r} yet: the committed dvc.lock is the starting point")
        if keep is not None:
            unavailable(keep, f"{branch!r} has published no state yet (its CI has not pushed a build)")
        return {"branch": branch, "files": []}
    allowed = {LOCK, *uncached_outs(repo)}
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "state.tar.gz"
        fs.get_file(key, str(local))
        data = local.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name in allowed]
        skipped = sorted(m.name for m in tar.getmembers() if m not in members)
        tar.extractall(".", members=members, filter="data")
    names = [m.name for m in members]
    print(
        f"restored the state of {branch!r}: {', '.join(names)}"
        + (f" (ignored, not an output of this dvc.yaml: {', '.join(skipped)})" if skipped else "")
    )
    if keep is not None:
        keep_snapshot(repo, branch, names, keep)
    return {"branch": branch, "files": names}


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
    parser.add_argument("--branch", required=True, help="branch whose state to publish or restore, e.g. main")
    parser.add_argument("--keep", type=Path, help="restore: also keep a copy (+ its tuned eval samples) here")
    args = parser.parse_args(argv)
    try:
        if args.action == "publish":
            publish(args.branch)
        else:
            restore(args.branch, args.keep)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
