"""docker-compose.yml and the Dockerfile, checked for structure (no Docker engine runs here)."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import typer.main
import yaml

from configsync.cli import app
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return parsed


def _subcommands() -> set[str]:
    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def _parse(args: list[str]) -> None:
    """Parse a command line as `configsync` would, without running it (raises on a bad one)."""
    group = typer.main.get_command(app)
    command = group.commands[args[0]]  # type: ignore[attr-defined]
    command.make_context(args[0], args[1:])


def test_compose_has_the_services_of_the_original_readme(compose: dict[str, Any]) -> None:
    # The original README's services, and the metrics it planned next (Prometheus, Grafana).
    assert set(compose["services"]) == {
        "db",
        "redis",
        "migrate",
        "backend",
        "celery",
        "prometheus",
        "grafana",
    }
    assert "configsync_data" in compose["volumes"]
    assert "configsync_data:/var/lib/postgresql/data" in compose["services"]["db"]["volumes"]
    assert "8000:8000" in compose["services"]["backend"]["ports"]


def test_services_start_in_order_with_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "healthcheck" in services["db"] and "healthcheck" in services["redis"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("backend", "celery"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
    assert "/health/ready" in " ".join(services["backend"]["healthcheck"]["test"])


def test_commands_are_real_cli_entry_points(compose: dict[str, Any]) -> None:
    known = _subcommands()
    for name in ("migrate", "backend", "celery"):
        command = compose["services"][name]["command"]
        assert command[0] == "configsync" and command[1] in known, (name, command)
        _parse(command[1:])  # raises on an unknown option
    assert "--reload" in compose["services"]["backend"]["command"]
    assert "./configsync:/app/configsync" in compose["services"]["backend"]["volumes"]


def test_no_default_secret_and_production_urls(compose: dict[str, Any]) -> None:
    env = compose["services"]["backend"]["environment"]
    assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")
    assert env["CONFIGSYNC_MASTER_KEYS"].startswith("${CONFIGSYNC_MASTER_KEYS:?")
    assert env["CONFIGSYNC_LOG_SIGNING_KEY"].startswith("${CONFIGSYNC_LOG_SIGNING_KEY:?")
    assert env["DATABASE_URL"].startswith("postgresql://") and "@db:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    for name in ("migrate", "celery"):
        assert compose["services"][name]["environment"] == env


def test_dockerfile_is_one_slim_non_root_image() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1] not in ("root", "0")
    cmd = re.search(r"^CMD \[(.*)\]$", text, re.M)
    assert cmd is not None and '"configsync", "serve"' in cmd.group(1)
    for copied in ("configsync", "projections", "alembic", "alembic.ini", "pyproject.toml"):
        assert re.search(rf"^COPY .*\b{re.escape(copied)}\b", text, re.M), copied


def test_prometheus_and_grafana_run_beside_with_the_dashboard_provisioned(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert "/etc/prometheus/prometheus.yml" in " ".join(services["prometheus"]["volumes"])
    grafana = " ".join(services["grafana"]["volumes"])
    assert "/etc/grafana/provisioning" in grafana and "/var/lib/grafana/dashboards" in grafana
    for mounted in (*services["prometheus"]["volumes"], *services["grafana"]["volumes"]):
        source = mounted.split(":")[0]
        assert (ROOT / source).exists(), source  # every file compose mounts is in the repository
    worker = services["celery"]["command"]
    assert worker[worker.index("--metrics-port") + 1] == "9101"


def test_the_worker_has_its_own_health_check_and_a_writable_audit_volume(
    compose: dict[str, Any],
) -> None:
    celery = compose["services"]["celery"]
    check = " ".join(celery["healthcheck"]["test"])
    assert "9101/metrics" in check and "8000" not in check
    assert (
        "configsync_logs:/app/logs" in celery["volumes"] and "configsync_logs" in compose["volumes"]
    )
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert (
        "chown configsync:configsync /app/logs" in dockerfile
    )  # what the named volume starts with
    env = compose["services"]["backend"]["environment"]
    assert env["CONFIGSYNC_ENV"] == "production"  # no default secret accepted


def test_docker_compose_config_accepts_the_file() -> None:
    import shutil
    import subprocess

    if shutil.which("docker") is None:
        pytest.skip("no docker CLI here")
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker CLI here has no compose plugin (no Docker engine runs either)")
    env = {
        "SECRET_KEY": "k" * 48,
        "CONFIGSYNC_MASTER_KEYS": "H4ZzKKTS0q4S6fl+D5G5Ww3Y3d0b9xUXgD1yYfp3nV0=",
        "CONFIGSYNC_LOG_SIGNING_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "PATH": os.environ["PATH"],
    }
    result = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
