"""The transparency log over HTTP: its key, its signed checkpoints, inclusion and consistency
proofs (RFC 9162 §2.1.3 and §2.1.4)."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse

from configsync.audit import log
from configsync.audit.schemas import CheckpointSigned, ConsistencyProof, InclusionProof
from configsync.auth.deps import AdminDep, AuditorOrAdminDep
from configsync.deps import SessionDep, SettingsDep
from configsync.errors import NotFound
from configsync.http import errors, json_response
from projections import merkle

router = APIRouter(tags=["transparency log"], responses=errors(413, 422, 503))
TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}}
}


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


@router.get("/v1/log/key", response_class=Response, responses=TEXT)
def log_key(settings: SettingsDep) -> Response:
    """The log's Ed25519 public key, as a C2SP note verifier key."""
    key = log.LogSigner.from_settings(settings).verifier_key()
    return PlainTextResponse(key + "\n")


@router.get(
    "/v1/log/checkpoint",
    response_class=Response,
    responses={**TEXT, **errors(404)},
)
def latest_checkpoint(session: SessionDep) -> Response:
    """The latest signed checkpoint (C2SP tlog-checkpoint signed note)."""
    signed = log.latest(session)
    if signed is None:
        raise NotFound("no checkpoint has been signed yet")
    return PlainTextResponse(signed.note)


@router.post("/v1/log/checkpoint", response_model=CheckpointSigned, responses=errors(401, 403))
def sign_now(session: SessionDep, settings: SettingsDep, _admin: AdminDep) -> Response:
    """Sign a checkpoint of the tree as it is now (admins); the latest one if it has not grown."""
    signed = log.sign_checkpoint(session, log.LogSigner.from_settings(settings))
    if signed is not None:
        log.publish(signed, settings)
    current = signed or log.latest(session)
    if current is None:
        raise NotFound("the log is empty: there is nothing to sign")
    return json_response(
        {"tree_size": current.tree_size, "root_hash": current.root_hash, "note": current.note}
    )


@router.get("/v1/log/proof/inclusion", response_model=InclusionProof, responses=errors(401, 403))
def inclusion(
    session: SessionDep,
    _caller: AuditorOrAdminDep,
    position: Annotated[int, Query(ge=1, description="the event's position")],
    tree_size: Annotated[int, Query(ge=1)],
) -> Response:
    """RFC 9162 inclusion proof: the event at `position` is in the log of `tree_size` events."""
    path = merkle.inclusion_proof(session, position, tree_size)
    return json_response(
        {
            "leaf_index": position - 1,
            "tree_size": tree_size,
            "leaf_hash": _b64(merkle.leaf(session, position)),
            "inclusion_path": [_b64(h) for h in path],
            "root_hash": _b64(merkle.root(session, tree_size)),
        }
    )


@router.get(
    "/v1/log/proof/consistency", response_model=ConsistencyProof, responses=errors(401, 403)
)
def consistency(
    session: SessionDep,
    _caller: AuditorOrAdminDep,
    first: Annotated[int, Query(alias="from", ge=1)],
    second: Annotated[int, Query(alias="to", ge=1)],
) -> Response:
    """RFC 9162 consistency proof: the log of `to` events extends the log of `from` events."""
    path = merkle.consistency_proof(session, first, second)
    return json_response(
        {
            "tree_size_1": first,
            "tree_size_2": second,
            "consistency_path": [_b64(h) for h in path],
        }
    )
