"""Request dependencies: the runtime, the app's registry and the caller's tenant."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from jobyard import jsonutil
from jobyard.runtime import Runtime
from jobyard.sdk import Yard

DEFAULT_TENANT = "default"


# The dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread,
# which costs a thread hop per dependency per request on the hottest endpoints.


async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def yard(request: Request) -> Yard:
    y: Yard = request.app.state.yard
    return y


async def tenant(request: Request) -> str:
    """The caller's tenant. Until API keys exist every caller is the default tenant."""
    return DEFAULT_TENANT


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(jsonutil.dumps(content), status_code=status_code, media_type="application/json", headers=headers)
