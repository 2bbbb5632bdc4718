"""What an API process does once, at start-up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_started_api_process_keeps_its_startup_objects_out_of_the_collectors_sight(
    tmp_path: Path,
) -> None:
    """Full collections walked every module, class and engine object: 106-134 ms pauses under
    write load. Once started, the process freezes them, once (a second app in the same process
    does not collect and freeze again)."""
    script = textwrap.dedent(
        f"""
        import gc
        from fastapi.testclient import TestClient
        from configsync.app import create_app
        from configsync.settings import Settings
        from tests.conftest import LOG_KEY, MASTER_KEY, TEST_SECRET

        freezes = []
        freeze = gc.freeze
        gc.freeze = lambda: (freezes.append(1), freeze())

        def app():
            return create_app(Settings(
                database_url="sqlite:///{tmp_path}/c.db", secret_key=TEST_SECRET,
                master_keys=MASTER_KEY, log_signing_key=LOG_KEY,
                audit_log="{tmp_path}/audit.log", checkpoint_log="{tmp_path}/cp.log",
                cache_warm=False,
            ))

        first = app()
        assert gc.get_freeze_count() == 0
        with TestClient(first):
            frozen = gc.get_freeze_count()
        with TestClient(app()):
            pass
        print(frozen, len(freezes))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    frozen, calls = map(int, done.stdout.split()[-2:])
    assert frozen > 50_000, frozen  # the process's scaffolding, not a handful
    assert calls == 1  # once per process
