"""URL params that would be committed (params.yaml, dvc.lock): no credentials, https for a remote judge
unless it is on loopback, and a malformed URL is a clean config error naming the key (no traceback).

Run:  pytest tests/test_judge_config.py -q
"""

from __future__ import annotations

import subprocess

import pytest
import yaml
from conftest import ROOT, raw_params

from llmops.config import load_params
from llmops.errors import ConfigError


def _load(tmp_path, section: str, **values):
    raw = raw_params()
    raw[section].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(path)


@pytest.mark.parametrize(
    "url, message",
    [
        ("https://user:sk-secret@api.example.com/v1", "credentials"),
        ("https://:sk-secret@api.example.com/v1", "credentials"),
        ("https://api.example.com/v1?api-key=sk-secret", "credential-like query"),
        ("http://api.example.com/v1", "clear text"),
        ("http://10.0.0.5:8000/v1", "clear text"),
        ("https://api.example.com:99999/v1", "malformed URL"),
        ("https://api.example.com:abc/v1", "malformed URL"),
        ("ftp://api.example.com/v1", "expected http"),
        ("api.example.com/v1", "expected http"),
    ],
)
def test_bad_judge_urls_are_config_errors_naming_the_key(tmp_path, monkeypatch, url, message):
    monkeypatch.chdir(ROOT)  # params validation resolves configs/ from the repository root
    with pytest.raises(ConfigError, match=rf"judge\.base_url: .*{message}") as err:
        _load(tmp_path, "judge", provider="remote", base_url=url)
    assert "sk-secret" not in str(err.value)  # the error must not repeat the credential either


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/v1",
        "http://127.0.0.1:8000/v1",
        "http://localhost:8000/v1",
        "http://[::1]:8000/v1",
        "https://judge.internal:8443/v1?api-version=2024-10-21",
    ],
)
def test_good_judge_urls_pass(tmp_path, monkeypatch, url):
    monkeypatch.chdir(ROOT)
    assert _load(tmp_path, "judge", provider="remote", base_url=url).judge.base_url == url


@pytest.mark.parametrize(
    "uri, ok",
    [
        ("http://mlflow.internal:5000", True),
        ("sqlite:///mlflow.db", True),
        ("databricks", True),
        ("https://user:pw@mlflow.example.com", False),
        ("http://mlflow.internal:70000", False),
    ],
)
def test_tracking_uri(tmp_path, monkeypatch, uri, ok):
    monkeypatch.chdir(ROOT)
    if ok:
        assert _load(tmp_path, "tracking", uri=uri).tracking.uri == uri
    else:
        with pytest.raises(ConfigError, match=r"tracking\.uri: .*(credentials|malformed)"):
            _load(tmp_path, "tracking", uri=uri)


@pytest.mark.integration
def test_cli_reports_a_bad_port_in_one_line(tmp_path):
    """`llmops judge` with a bad port: exit 1, one line naming the key, no traceback."""
    raw = raw_params()
    raw["judge"].update(provider="remote", base_url="https://api.example.com:99999/v1")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    proc = subprocess.run(["llmops", "judge"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1 and "judge.base_url" in proc.stderr and "Traceback" not in proc.stderr
