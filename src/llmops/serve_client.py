"""The client side of our server: start `python -m llmops.serve` on a free loopback port, wait until it answers,
hand its URL to the caller, and always stop it.

Used by the judge stage (the local judge and answer generation) and the deploy smoke test; tests use it too.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from llmops.model import ModelSource
from llmops.serve_api import API_KEY_ENV


def _get(url: str, timeout: float = 2.0) -> int:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URL we built
        return resp.status


@contextlib.contextmanager
def running_server(
    source: ModelSource,
    adapter_dir: Path | str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = 300.0,
    log_file: Path | None = None,
    api_key: str | None = None,
) -> Iterator[str]:
    """Serve base (+ "tuned" if adapter_dir) in a subprocess; yield "http://HOST:PORT/v1"; always stop it.

    A subprocess (not a thread) so stopping is a signal, not a cooperative flag, and a crash in the model
    cannot take the caller down. The child binds the port itself (port 0 = a free one) and reports it via
    a file, so there is no pick-then-bind race. OPENAI_API_KEY is removed from the child's environment:
    the server never needs it. Its stderr goes to ours (or to log_file), at warning level: no access log.
    api_key, if given, becomes the child's LLMOPS_SERVE_API_KEY (through the environment, never argv);
    otherwise the child inherits ours. Readiness is polled on /health, which needs no key.
    """
    from llmops.errors import StageError
    from llmops.model import reference

    base_ref, revision = reference(source)
    scratch = Path(tempfile.mkdtemp(prefix="llmops-serve-"))
    port_file = scratch / "port"
    cmd = [
        sys.executable,
        "-m",
        "llmops.serve",
        "--model",
        base_ref,
        "--host",
        host,
        "--port",
        str(port),
        "--port-file",
        str(port_file),
        "--quiet",
    ]
    if revision:
        cmd += ["--revision", revision]
    if adapter_dir is not None:
        if not Path(adapter_dir).is_dir():
            raise StageError(f"{adapter_dir}: adapter folder not found; run the train stage first")
        cmd += ["--adapter", str(adapter_dir)]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    if api_key is not None:
        env[API_KEY_ENV] = api_key
    log = open(log_file, "ab") if log_file else None  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, env=env, stdout=log or subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + startup_timeout_s
        url = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StageError(
                    f"model server exited with code {proc.returncode} before it was ready "
                    f"(model {base_ref}, adapter {adapter_dir}); its error is above"
                )
            if url is None and port_file.is_file():
                url = f"http://{'[' + host + ']' if ':' in host else host}:{port_file.read_text().strip()}"
            if url is not None:
                with contextlib.suppress(OSError):
                    if _get(f"{url}/health") == 200:
                        break
            time.sleep(0.2)
        else:
            raise StageError(f"model server not ready within {startup_timeout_s:.0f} s (model {base_ref})")
        yield f"{url}/v1"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log:
            log.close()
        with contextlib.suppress(OSError):
            for f in scratch.iterdir():
                f.unlink()
            scratch.rmdir()
