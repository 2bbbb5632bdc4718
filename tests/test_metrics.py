"""GET /metrics: what it counts moves by exactly what was done, on the fast path too, and one
scrape of `serve --workers 2` adds up both workers."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Api, clean_env, eventually, running_server

URL = "/v1/configs/pay/prod"
ROUTE = "/v1/configs/{service}/{environment}"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels (the parser refuses a malformed one)."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(scrape: dict[Any, float], metric: str, **labels: str) -> float:
    return scrape.get((metric, tuple(sorted(labels.items()))), 0.0)


def total(scrape: dict[Any, float], metric: str, **labels: str) -> float:
    """The sum over every sample of `metric` whose labels include `labels`."""
    return sum(
        v
        for (n, have), v in scrape.items()
        if n == metric and all((k, w) in have for k, w in labels.items())
    )


def scrape(api: Api | httpx.Client) -> dict[Any, float]:
    response = api.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def test_reads_writes_conflicts_and_logins_are_counted_exactly(pg_api: Api) -> None:
    api = pg_api
    owner = api.person("owner@example.com")
    api.put(URL, headers=owner, json={"data": {"A": 1}})
    key = {"X-API-Key": api.key(owner, "pay")}
    before = scrape(api)

    for _ in range(5):
        assert api.get(URL, headers=key).status_code == 200
    assert api.get(URL, headers={**key, "If-None-Match": '"1"'}).status_code == 304
    assert api.get(URL, headers=key, params={"format": "dotenv"}).status_code == 200
    api.put(URL, headers=owner, json={"data": {"A": 2}})
    api.post(URL + "/rollback", headers=owner, json={"to_version": 1})
    stale = api.put(URL, headers={**owner, "If-Match": '"1"'}, json={"data": {"A": 3}})
    assert stale.status_code == 412
    api.request("DELETE", URL, headers=owner)
    assert (
        api.post("/auth/login", json={"email": "x@example.com", "password": "nope"}).status_code
        == 401
    )
    after = scrape(api)

    def moved(metric: str, **labels: str) -> float:
        return total(after, metric, **labels) - total(before, metric, **labels)

    assert moved("configsync_config_reads_total", format="json") == 6
    assert moved("configsync_config_reads_total", format="dotenv") == 1
    # The cache answered some of them, before the router: they are counted all the same.
    assert moved("configsync_config_reads_total", cache="hit") >= 1
    assert moved("configsync_http_requests_total", route=ROUTE, method="GET", status="200") == 6
    assert moved("configsync_http_requests_total", route=ROUTE, method="GET", status="304") == 1
    assert moved("configsync_http_requests_total", route=ROUTE, method="PUT", status="412") == 1
    for action in ("updated", "rolled_back", "deleted"):
        assert moved("configsync_config_writes_total", action=action) == 1, action
    assert moved("configsync_config_writes_total", action="created") == 0
    assert moved("configsync_write_conflicts_total") == 1
    assert moved("configsync_append_seconds_count") == 3
    assert moved("configsync_group_commit_batch_size_count") == 3
    assert moved("configsync_login_failures_total") == 1
    assert total(after, "configsync_build_info") == 1
    assert value(after, "configsync_projection_lag_events", name="current") == 0
    assert value(after, "configsync_log_position") == api.events()


def test_long_poll_waiters_are_a_gauge(pg_api: Api) -> None:
    api = pg_api
    owner = api.person("owner@example.com")
    api.put(URL, headers=owner, json={"data": {"A": 1}})
    done: list[int] = []

    def poll() -> None:
        answer = api.get(URL, headers={**owner, "If-None-Match": '"1"'}, params={"wait": 20})
        done.append(answer.status_code)

    thread = threading.Thread(target=poll)
    thread.start()
    assert eventually(lambda: value(scrape(api), "configsync_long_poll_waiters") == 1, 10)
    api.put(URL, headers=owner, json={"data": {"A": 2}})
    thread.join(10)
    assert done == [200]
    assert value(scrape(api), "configsync_long_poll_waiters") == 0


@pytest.mark.slow
def test_one_scrape_adds_up_every_worker(tmp_path: Path, pg_url: str, pg: Any) -> None:
    env = clean_env(
        DATABASE_URL=pg_url,
        SECRET_KEY="k" * 48,
        CONFIGSYNC_AUDIT_LOG=str(tmp_path / "a.log"),
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # serve makes the workers' shared directory
    with running_server(tmp_path, env, "--workers", "2") as url:
        httpx.post(url + "/auth/signup", json={"email": "o@example.com", "password": "pw-123456"})
        token = httpx.post(
            url + "/auth/login", json={"email": "o@example.com", "password": "pw-123456"}
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.put(url + URL, headers=auth, json={"data": {"A": 1}}).status_code == 201
        for _ in range(40):  # a new connection each: both workers serve some
            assert httpx.get(url + URL, headers=auth).status_code == 200
        time.sleep(1.5)  # each worker adds its fast path's counts within a second
        for _ in range(6):  # whichever worker answers the scrape, it reports both
            with httpx.Client(base_url=url) as client:
                found = scrape(client)
            assert total(found, "configsync_config_reads_total") == 40
            assert total(found, "configsync_config_writes_total", action="created") == 1


OPS = Path(__file__).resolve().parent.parent / "configsync" / "ops"


def test_the_dashboard_and_scrape_config_name_only_metrics_that_exist(pg_api: Api) -> None:
    import json
    import re

    import yaml

    api = pg_api
    owner = api.person("owner@example.com")
    api.put(URL, headers=owner, json={"data": {"A": 1}})
    api.get(URL, headers=owner)
    api.post("/auth/login", json={"email": "x@example.com", "password": "nope"})
    families = {family.name for family in text_string_to_metric_families(api.get("/metrics").text)}
    dashboard = json.loads((OPS / "grafana" / "dashboards" / "configsync.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    named = {
        re.sub(r"_(bucket|sum|count|total)$", "", name)
        for expr in expressions
        for name in re.findall(r"configsync_[a-z_]+", expr)
    }
    known = {re.sub(r"_total$", "", name) for name in families}
    assert named and named <= known, named - known
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in ("reads", "writes", "latency", "conflicts", "lag", "cache hit", "waiters"):
        assert topic in titles, topic
    scrape_config = yaml.safe_load((OPS / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"]
        for job in scrape_config["scrape_configs"]
    }
    assert targets == {"configsync-api": ["backend:8000"], "configsync-worker": ["celery:9101"]}
