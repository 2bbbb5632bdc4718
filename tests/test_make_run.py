"""`make run` on a fresh checkout serves the API with nothing set (embedded SQLite)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, clean_env, free_port

pytestmark = pytest.mark.slow


def _checkout(dest: Path) -> Path:
    """The repository's files as a fresh clone would have them (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def test_make_run_migrates_and_serves_on_a_fresh_checkout(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    checkout = _checkout(tmp_path / "checkout")
    assert not (checkout / "configsync.db").exists()
    port = free_port()
    # The suite's own virtualenv stands in for the one `make run` would create: installing from
    # the network again would only test pip. Everything else is the real target.
    # A stamp newer than pyproject.toml tells make the install step is done, so the shared
    # virtualenv is not re-pointed at this temporary checkout.
    venv = Path(sys.executable).parent.parent
    stamp = tmp_path / "installed"
    stamp.touch()
    process = subprocess.Popen(
        ["make", "run", f"VENV={venv}", f"STAMP={stamp}", f"PORT={port}"],
        cwd=checkout,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        body = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                body = response.json()
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert body is not None, "make run did not serve: " + _output(process)
        assert body["status"] == "ok" and body["service"] == "ConfigSync"
        assert (checkout / "configsync.db").is_file()
        assert (checkout / ".configsync-secret-key").is_file()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _output(process: subprocess.Popen[bytes]) -> str:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    assert process.stdout is not None
    return process.stdout.read().decode(errors="replace")[-3000:]
