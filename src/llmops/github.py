"""The sticky pull-request comment: one comment per PR, updated in place on every push.

Run:  GITHUB_TOKEN=... llmops comment --repo owner/name --pr 7 --file reports/report.md
      GITHUB_TOKEN=... PYTHONPATH=src python -m llmops.github --repo owner/name --pr 7 --file reports/report.md
      (the second needs no install: this module uses only the standard library, so the workflow's comment
      job posts without installing, let alone running, the pipeline)

GitHub REST API only (stdlib urllib): list the PR's issue comments (paginated), PATCH the one carrying the
marker *and written by the workflow's own identity*, or POST a new one. Anyone can paste the marker into a
comment: a marked comment by another user or app is never edited (nor trusted). The identity is the bot login
of the token: `github-actions[bot]` for the workflow's GITHUB_TOKEN (override with LLMOPS_COMMENT_AUTHOR, e.g.
`my-app[bot]` for a GitHub App token). The token comes from GITHUB_TOKEN only; the API base from GITHUB_API_URL
(set by GitHub Actions; GitHub Enterprise and the tests' loopback fake point it elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from llmops.errors import StageError


class GitHubRefused(StageError):
    """GitHub answered with an error status or could not be reached: the comment is not posted, but nothing about
    the model is wrong, so the job warns instead of failing (a Dependabot PR's read-only token gets 403)."""


API_VERSION = "2022-11-28"
MARKER = "<!-- llmops-report -->"  # the sticky comment is the one comment carrying this marker
AUTHOR_ENV = "LLMOPS_COMMENT_AUTHOR"
DEFAULT_AUTHOR = "github-actions[bot]"  # who GITHUB_TOKEN writes as


def is_own(comment: dict, author: str, marker: str = MARKER) -> bool:
    """The marker, written by `author`; for a bot, also typed Bot and (when GitHub says) via the same app."""
    user = comment.get("user") or {}
    if marker not in (comment.get("body") or "") or user.get("login") != author:
        return False
    if author.endswith("[bot]"):
        app = comment.get("performed_via_github_app") or {}
        return user.get("type") == "Bot" and (not app or app.get("slug") == author.removesuffix("[bot]"))
    return True


def _request(method: str, url: str, token: str, body: dict | None = None) -> tuple[Any, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "llmops-report",
            **({"Content-Type": "application/json"} if data else {}),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null"), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        # The message names the call and GitHub's answer; never the token.
        detail = exc.read().decode(errors="replace")[:300]
        raise GitHubRefused(f"GitHub API {method} {url}: HTTP {exc.code} {detail}") from None
    except urllib.error.URLError as exc:
        raise GitHubRefused(f"GitHub API {method} {url}: {exc.reason}") from None


def _next_link(headers: dict) -> str | None:
    link = next((v for k, v in headers.items() if k.lower() == "link"), "")
    match = re.search(r'<([^>]+)>;\s*rel="next"', link or "")
    return match.group(1) if match else None


def sticky_comment(
    repo: str,
    pr: int,
    body: str,
    token: str | None = None,
    api_url: str | None = None,
    marker: str = MARKER,
    author: str | None = None,
) -> dict:
    """Create or update the PR's marked comment by `author`; returns {"action": "created"|"updated", "id", "url"}."""
    author = author or os.environ.get(AUTHOR_ENV) or DEFAULT_AUTHOR
    token = token or os.environ.get("GITHUB_TOKEN")
    if not token:
        raise GitHubRefused("GITHUB_TOKEN is not set (the comment needs a token with pull-requests: write)")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise StageError(f"--repo must be owner/name, got {repo!r}")
    api = (api_url or os.environ.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/")
    if marker not in body:
        body = f"{marker}\n{body}"
    url: str | None = f"{api}/repos/{repo}/issues/{pr}/comments?per_page=100"
    existing = None
    while url and existing is None:
        page, headers = _request("GET", url, token)
        existing = next((c for c in page or [] if is_own(c, author, marker)), None)
        url = _next_link(headers)
    if existing:
        data, _ = _request("PATCH", f"{api}/repos/{repo}/issues/comments/{existing['id']}", token, {"body": body})
        action = "updated"
    else:
        data, _ = _request("POST", f"{api}/repos/{repo}/issues/{pr}/comments", token, {"body": body})
        action = "created"
    return {"action": action, "id": data.get("id"), "url": data.get("html_url")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create or update the sticky PR comment.")
    parser.add_argument("--repo", required=True, help="owner/name")
    parser.add_argument("--pr", required=True, type=int, help="pull request number")
    parser.add_argument("--file", required=True, type=Path, help="Markdown body, e.g. reports/report.md")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(sticky_comment(args.repo, args.pr, args.file.read_text(encoding="utf-8"))))
    except GitHubRefused as exc:  # GitHub said no (or was unreachable): warn, in the log and the job summary
        warn(f"the PR comment was not posted: {exc}. The report is in this run's job summary and artifact.")
        return 0
    except (StageError, OSError) as exc:  # our own mistake (bad --repo, no report file): the job fails
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def warn(message: str) -> None:
    """A GitHub Actions warning annotation, and the same line in the job summary when there is one."""
    one_line = " ".join(message.split())
    print(f"::warning title=PR comment::{one_line}")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(f"> ⚠️ **PR comment not posted**: {one_line}\n")


if __name__ == "__main__":
    sys.exit(main())
