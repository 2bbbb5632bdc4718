"""Failed logins are throttled per account and per client address, in every API process."""

from __future__ import annotations

import time

from sqlalchemy import Engine

from tests.conftest import PASSWORD, Api, make_api

RIGHT = {"email": "person@example.com", "password": PASSWORD}
WRONG = {"email": "person@example.com", "password": "not-the-password"}
WINDOW = 4  # seconds


def test_the_failure_past_the_limit_is_429_on_another_process_until_the_window_moves(
    pg: Engine, pg_url: str, redis_url: str
) -> None:
    limits = {
        "redis_url": redis_url,
        "login_failures_per_account": f"3 per {WINDOW} seconds",
        "login_failures_per_address": f"100 per {WINDOW} seconds",
    }
    first, second = next(make_api(pg_url, pg, **limits)), next(make_api(pg_url, pg, **limits))
    first.signup(RIGHT["email"])
    first_failure = time.monotonic()
    for _ in range(3):
        assert first.post("/auth/login", json=WRONG).status_code == 401
    began = time.monotonic()
    # Each failure hashes a password: on a loaded machine three of them took over 2 s, and the
    # first left the window before the fourth came (the window is moving, as it should be).
    assert began - first_failure < WINDOW - 1, "the failures took longer than the window"
    throttled = second.post("/auth/login", json=WRONG)
    assert throttled.status_code == 429, throttled.text
    assert throttled.json()["error"] == "Throttled"
    assert 1 <= int(throttled.headers["retry-after"]) <= WINDOW
    # Once spent, the right password is refused too: that is what stops guessing.
    assert second.post("/auth/login", json=RIGHT).status_code == 429
    time.sleep(max(0.0, WINDOW + 0.2 - (time.monotonic() - began)))
    assert second.post("/auth/login", json=RIGHT).status_code == 200


def test_an_address_is_throttled_across_accounts_and_successes_never_count(
    sqlite_api: Api, sqlite: Engine, sqlite_url: str
) -> None:
    api = next(
        make_api(
            sqlite_url,
            sqlite,
            login_failures_per_account="100 per 60 seconds",
            login_failures_per_address="4 per 60 seconds",
        )
    )
    api.signup(RIGHT["email"])
    for _ in range(6):  # successes are not failures: never slowed
        assert api.post("/auth/login", json=RIGHT).status_code == 200
    for i in range(4):
        wrong = {"email": f"nobody{i}@example.com", "password": "x" * 10}
        assert api.post("/auth/login", json=wrong).status_code == 401
    blocked = api.post("/auth/login", json={"email": "other@example.com", "password": "y" * 10})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
