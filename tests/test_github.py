"""The sticky PR comment against a loopback server speaking GitHub's REST shapes (issue comments with `user`,
`performed_via_github_app`, Link pagination, 401 on a bad token): only the workflow's own comment is edited,
and the workflow's `comment` job step itself (run by tests/workflow_sim.py) posts the report."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import BIN, ROOT, offline_env
from workflow_sim import run_job

from llmops.errors import StageError
from llmops.github import MARKER, sticky_comment

BOT = {"login": "github-actions[bot]", "id": 41898282, "type": "Bot"}
ACTIONS_APP = {"id": 15368, "slug": "github-actions", "name": "GitHub Actions"}
HUMAN = {"login": "mallory", "id": 7, "type": "User"}
OTHER_APP_BOT = {"login": "other-ci[bot]", "id": 99, "type": "Bot"}


class FakeGitHub(ThreadingHTTPServer):
    token = "ghs_workflow_token"  # an installation token of the github-actions app: writes as BOT

    def __init__(self, comments: list[dict], read_only: bool = False):
        super().__init__(("127.0.0.1", 0), Handler)
        self.comments = comments
        self.calls: list[tuple[str, str]] = []
        self.read_only = read_only  # a token without pull-requests: write (Dependabot PRs): reads work, writes 403

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def comment(cid: int, body: str, user: dict, app: dict | None = None) -> dict:
    return {
        "id": cid,
        "node_id": f"IC_{cid}",
        "html_url": f"https://github.com/acme/llm/pull/7#issuecomment-{cid}",
        "issue_url": "https://api.github.com/repos/acme/llm/issues/7",
        "body": body,
        "user": user,
        "author_association": "NONE" if user["type"] == "Bot" else "CONTRIBUTOR",
        "created_at": "2026-11-22T00:00:00Z",
        "updated_at": "2026-11-22T00:00:00Z",
        "performed_via_github_app": app,
    }


class Handler(BaseHTTPRequestHandler):
    server: FakeGitHub

    def log_message(self, *args):
        pass

    def _send(self, status: int, obj, headers: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        self.server.calls.append((self.command, self.path))
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self._send(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})
            return False
        return True

    def do_GET(self):
        if not self._authorised():
            return
        url = urlparse(self.path)
        if url.path != "/repos/acme/llm/issues/7/comments":
            return self._send(404, {"message": "Not Found"})
        q = parse_qs(url.query)
        per_page, page = int(q.get("per_page", ["30"])[0]), int(q.get("page", ["1"])[0])
        chunk = self.server.comments[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(self.server.comments):
            headers["Link"] = f'<{self.server.url}{url.path}?per_page={per_page}&page={page + 1}>; rel="next"'
        self._send(200, chunk, headers)

    def _body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def do_POST(self):
        if not self._authorised():
            return
        if self.server.read_only:
            return self._send(403, {"message": "Resource not accessible by integration"})
        if self.path != "/repos/acme/llm/issues/7/comments":
            return self._send(404, {"message": "Not Found"})
        new = comment(5000 + len(self.server.comments), self._body()["body"], BOT, ACTIONS_APP)
        self.server.comments.append(new)
        self._send(201, new)

    def do_PATCH(self):
        if not self._authorised():
            return
        cid = int(self.path.rsplit("/", 1)[-1])
        found = next((c for c in self.server.comments if c["id"] == cid), None)
        if found is None:
            return self._send(404, {"message": "Not Found"})
        if found["user"] != BOT:  # GitHub: an app token may not edit a user's comment
            return self._send(403, {"message": "Resource not accessible by integration"})
        found["body"] = self._body()["body"]
        self._send(200, found)


@pytest.fixture
def github(monkeypatch):
    def _start(comments, read_only=False):
        server = FakeGitHub(comments, read_only)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        monkeypatch.setenv("GITHUB_TOKEN", server.token)
        monkeypatch.setenv("GITHUB_API_URL", server.url)
        return server

    servers: list[FakeGitHub] = []
    yield _start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.mark.integration
def test_marked_comments_by_others_are_never_edited(github):
    human = comment(1, f"{MARKER}\nGate: **pass** (pasted by a human)", HUMAN)
    other = comment(2, f"{MARKER}\nGate: **pass**", OTHER_APP_BOT, {"id": 1, "slug": "other-ci"})
    server = github([human, other, *(comment(10 + i, f"chatter {i}", HUMAN) for i in range(120))])
    first = sticky_comment("acme/llm", 7, f"{MARKER}\nGate: **fail**")
    assert first["action"] == "created"
    assert [m for m, _ in server.calls] == ["GET", "GET", "POST"]  # both pages read, nothing patched
    assert human["body"].endswith("(pasted by a human)") and other["body"].endswith("Gate: **pass**")
    server.calls.clear()
    second = sticky_comment("acme/llm", 7, "Gate: **pass**")
    assert second["action"] == "updated" and second["id"] == first["id"]
    assert [m for m, _ in server.calls] == ["GET", "GET", "PATCH"]
    ours = [c for c in server.comments if c["user"] == BOT]
    assert len(ours) == 1 and ours[0]["body"] == f"{MARKER}\nGate: **pass**"


@pytest.mark.integration
def test_a_bot_login_via_another_app_is_not_ours(github):
    spoof = comment(3, f"{MARKER}\nold", dict(BOT), {"id": 1, "slug": "not-github-actions"})
    server = github([spoof])
    assert sticky_comment("acme/llm", 7, "new")["action"] == "created"
    assert spoof["body"] == f"{MARKER}\nold" and len(server.comments) == 2


def run_comment_job(server: FakeGitHub, tmp_path, report_body: str):
    """The `comment` job's steps as GitHub runs them, on a workspace holding the base branch's src and the
    downloaded report, for a same-repo pull_request run (PR 7 into main)."""
    ws = tmp_path / "ws"
    (ws / "pr-reports").mkdir(parents=True)
    (ws / "src").symlink_to(ROOT / "src")  # the checkout of the base branch
    (ws / "pr-reports/report.md").write_text(f"{MARKER}\n# llmops report\n\n{report_body}")
    env = {k: v for k, v in offline_env(tmp_path).items() if k not in ("GITHUB_TOKEN", "PYTHONPATH")}
    env["GITHUB_API_URL"] = server.url  # set by the runner on GitHub
    return run_job(
        ROOT / ".github/workflows/pipeline.yml",
        "comment",
        ws,
        github=comment_job_context(server.token),
        secrets={},
        base_env=env,
        skip_ids={},
        path_prepend=[str(BIN)],
    )


def comment_job_context(token: str) -> dict:
    """The `github` context of a same-repo pull_request run (PR 7 into main)."""
    return {
        "event_name": "pull_request",
        "ref": "refs/pull/7/merge",
        "ref_name": "7/merge",
        "base_ref": "main",
        "repository": "acme/llm",
        "sha": "0" * 40,
        "token": token,
        "event": {
            "repository": {"default_branch": "main"},
            "pull_request": {"number": 7, "head": {"repo": {"full_name": "acme/llm"}}, "base": {"sha": "1" * 40}},
        },
    }


@pytest.mark.integration
def test_the_workflow_comment_job_posts_the_downloaded_report(github, tmp_path):
    """The `comment` job's own run: step, as GitHub would run it: stdlib only, base branch's src, no install."""
    server = github([comment(1, f"{MARKER}\nstale, by a human", HUMAN)])
    result = run_comment_job(server, tmp_path, "## :x: Pipeline failed at step `repro`\n")
    assert result.ok, [s.log for s in result.steps]
    assert sorted(result.skipped_uses) == sorted(
        [
            "actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8",
            "actions/download-artifact@d3f86a106a0bac45b974a628896c90dbdf5c8093",
        ]
    )
    ours = [c for c in server.comments if c["user"] == BOT]
    assert len(ours) == 1 and "Pipeline failed at step `repro`" in ours[0]["body"]
    assert server.comments[0]["body"] == f"{MARKER}\nstale, by a human"


@pytest.mark.integration
def test_a_read_only_token_is_a_warning_in_the_job_summary_not_a_red_job(github, tmp_path):
    """Issue #25: a same-repo PR whose token cannot write (Dependabot's): the comment job stays green."""
    server = github([], read_only=True)
    result = run_comment_job(server, tmp_path, "")
    assert result.ok, [s.log for s in result.steps]
    assert [m for m, _ in server.calls] == ["GET", "POST"] and server.comments == []
    assert "PR comment not posted" in result.summary and "HTTP 403" in result.summary


def test_a_fork_pr_gets_no_comment_job():
    from workflow_sim import Ctx, evaluate

    cond = __import__("workflow_sim").load_workflow(ROOT / ".github/workflows/pipeline.yml")["jobs"]["comment"]["if"]
    base = {"event_name": "pull_request", "repository": "acme/llm"}
    for full_name, expected in (("acme/llm", True), ("someone/llm", False)):
        ctx = {
            "github": Ctx({**base, "event": {"pull_request": {"head": {"repo": {"full_name": full_name}}}}}),
            "cancelled": lambda: False,
        }
        assert bool(evaluate(cond, ctx)) is expected


def unrelated(n: int = 130) -> list[dict]:
    """n comments by a person first: the workflow's one lands on page 2, so pagination must work."""
    return [comment(i, f"comment {i}", HUMAN) for i in range(1, n + 1)]


def marked(server):
    return [c for c in server.comments if MARKER in c["body"]]


@pytest.mark.integration
def test_sticky_comment_created_then_updated(github):
    github = github(unrelated())
    first = sticky_comment("acme/llm", 7, f"{MARKER}\nverdict: fail")
    assert first["action"] == "created"
    assert [m for m, _ in github.calls] == ["GET", "GET", "POST"]  # both pages read before creating
    github.calls.clear()
    second = sticky_comment("acme/llm", 7, "verdict: pass")  # marker added when the body lacks it
    assert second == {"action": "updated", "id": first["id"], "url": first["url"]}
    assert [m for m, _ in github.calls] == ["GET", "GET", "PATCH"]
    assert len(marked(github)) == 1 and marked(github)[0]["body"].endswith("verdict: pass")
    assert len(github.comments) == 131


@pytest.mark.integration
def test_comment_cli_and_errors(github, tmp_path):
    github = github(unrelated())
    body = tmp_path / "report.md"
    body.write_text(f"{MARKER}\n# report\n")
    env = offline_env(tmp_path, GITHUB_TOKEN=github.token, GITHUB_API_URL=github.url)
    args = ["--repo", "acme/llm", "--pr", "7", "--file", str(body)]
    cmd = ["llmops", "comment", *args]
    # the installed CLI creates; the workflow's no-install path (stdlib only, PYTHONPATH=src) updates
    no_install = [
        sys.executable,
        "-I",
        "-S",
        "-c",  # -S: no site-packages at all, only the standard library
        f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r}); from llmops.github import main; sys.exit(main())",
        *args,
    ]
    for command, expected in ((cmd, "created"), (no_install, "updated")):
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["action"] == expected
    assert len(marked(github)) == 1
    # GitHub refusing is a warning (annotation + job summary), exit 0: the model is not what is wrong
    summary = tmp_path / "summary.md"
    env.update(GITHUB_TOKEN="wrong-secret-value", GITHUB_STEP_SUMMARY=str(summary))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and "::warning title=PR comment::" in proc.stdout and "HTTP 401" in proc.stdout
    assert "wrong-secret-value" not in proc.stdout + proc.stderr + summary.read_text()
    del env["GITHUB_TOKEN"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and "GITHUB_TOKEN is not set" in proc.stdout
    assert summary.read_text().count("PR comment not posted") == 2
    # our own mistakes still fail the job
    proc = subprocess.run(
        ["llmops", "comment", *args[:4], "--file", str(tmp_path / "none.md")], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1 and "none.md" in proc.stderr


def test_comment_rejects_bad_repo(monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    with pytest.raises(StageError, match="owner/name"):
        sticky_comment("acme/llm/../../x", 7, "body")
