"""The unit tier's guard (tests/conftest.py): a unit test that starts a process or opens a socket fails."""

from __future__ import annotations

import socket
import subprocess

import pytest
from conftest import TierViolation


def test_a_unit_test_cannot_start_a_process():
    with pytest.raises(TierViolation, match="starts a process"):
        subprocess.run(["true"], check=False)


def test_a_unit_test_cannot_open_or_serve_a_socket():
    with pytest.raises(TierViolation, match="opens a connection"):
        socket.create_connection(("127.0.0.1", 9), timeout=0.1)
    with socket.socket() as s, pytest.raises(TierViolation, match="listens on a socket"):
        s.bind(("127.0.0.1", 0))


@pytest.mark.integration
def test_integration_tests_may():
    assert subprocess.run(["true"], check=False).returncode == 0
