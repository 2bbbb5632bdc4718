"""HTTP endpoints for secrets: the key paths a service declares secret, and destroy."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from configsync.auth.deps import CallerDep
from configsync.auth.permissions import authorize_owner_or_admin
from configsync.auth.service import service_owner
from configsync.configs import commands, queries
from configsync.configs.auth import ConfigAccess, WriteContextDep, manage_access
from configsync.configs.schemas import (
    SecretsDeclare,
    SecretsDestroy,
    SecretsDestroyed,
    SecretsOut,
)
from configsync.deps import SessionDep
from configsync.domain.names import validate_name
from configsync.http import errors, json_response

router = APIRouter(tags=["secrets"], responses=errors(401, 403, 404, 413, 422, 503))

SERVICE_SECRETS = "/v1/services/{service}/secrets"


def _declared(session: SessionDep, ctx: WriteContextDep, service: str) -> Response:
    found = queries.declared_secrets(session, service, ctx.vault.patterns)
    return json_response(
        {
            "service": service,
            "paths": found.paths,
            "patterns": list(found.patterns),
            "plaintext_versions": found.plaintext_versions,
        }
    )


def _service_manager(service: str, session: SessionDep, caller: CallerDep) -> str:
    validate_name("service", service)
    exists, owner = service_owner(session, service)
    authorize_owner_or_admin(caller, service, owner, exists, "manage secrets")
    return service


ServiceManage = Annotated[str, Depends(_service_manager)]


@router.get(SERVICE_SECRETS, response_model=SecretsOut)
def get_service_secrets(
    service: ServiceManage, session: SessionDep, ctx: WriteContextDep
) -> Response:
    """The key paths declared secret beside the patterns, and how many earlier versions hold
    each in plain text (owner, admin)."""
    return _declared(session, ctx, service)


@router.put(SERVICE_SECRETS, response_model=SecretsOut)
def put_service_secrets(
    body: SecretsDeclare, service: ServiceManage, session: SessionDep, ctx: WriteContextDep
) -> Response:
    """Declare which key paths are secret (the whole list). Applies to later writes: values
    already written stay as they are until `secrets/destroy` seals the current ones."""
    commands.declare_secrets(session, service, body.paths)
    return _declared(session, ctx, service)


def _destroyer(
    service: str, environment: str, session: SessionDep, caller: CallerDep
) -> ConfigAccess:
    return manage_access(session, caller, service, environment, "destroy secrets")


@router.post(
    "/v1/configs/{service}/{environment}/secrets/destroy",
    response_model=SecretsDestroyed,
    responses=errors(409),
)
def destroy_secrets(
    body: SecretsDestroy,
    access: Annotated[ConfigAccess, Depends(_destroyer)],
    session: SessionDep,
    ctx: WriteContextDep,
) -> Response:
    """Crypto-shred the secret values of versions up to N for ever (owner, admin): the current
    values are sealed afresh in a new version first, then the data keys of the old ones are
    destroyed. The history stays and the chain still verifies."""
    done = commands.destroy_secrets(
        session, access.service, access.environment, body.up_to_version, ctx, reason=body.reason
    )
    return json_response(
        {
            "service": access.service,
            "environment": access.environment,
            "version": done.result.version,
            "changed": done.result.changed,
            "destroyed_keys": done.destroyed_keys,
            "unreadable_through_version": done.through_version,
        },
        headers={"ETag": f'"{done.result.version}"'},
    )
