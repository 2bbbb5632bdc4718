"""The baseline for bench/read.py: FastAPI returning the same document as pre-serialized bytes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fastapi import FastAPI, Request, Response

BODY = Path(os.environ["CONFIGSYNC_BENCH_BODY"]).read_bytes()
app = FastAPI()


@app.get("/doc")
async def doc() -> Response:
    return Response(BODY, media_type="application/json", headers={"ETag": '"1"'})


@app.post("/doc")
async def accept(request: Request) -> Response:
    """bench/write_http.py's baseline when etcd is not installed: take the body, answer."""
    await request.body()
    return Response(b'{"version": 1}', media_type="application/json")


_released: asyncio.Event | None = None


def _release_event() -> asyncio.Event:
    global _released
    if _released is None:
        _released = asyncio.Event()
    return _released


@app.get("/held")
async def held() -> Response:
    """bench/watchers.py's baseline: a request held until POST /release, then the document."""
    await _release_event().wait()
    return Response(BODY, media_type="application/json", headers={"ETag": '"2"'})


@app.post("/release")
async def release() -> Response:
    _release_event().set()
    return Response(b"")
