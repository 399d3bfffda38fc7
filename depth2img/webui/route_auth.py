"""The WebUI's --api-auth on our routes: the same check its own /sdapi/v1/* routes carry.

The WebUI's Api.add_api_route adds `dependencies=[Depends(Api.auth)]` to each of its routes when --api-auth is
set; routes an extension mounts on the FastAPI app directly get none. `auth_dependencies` reuses the WebUI's
own dependency (found on its routes), so credentials, realm and answer are the WebUI's; where no such route
exists (the WebUI started without --api) a check of the same kind is built here: HTTP Basic against
--api-auth's "user:password[,user2:password2]", 401 with WWW-Authenticate otherwise.
"""

# No `from __future__ import annotations`: FastAPI reads check()'s annotation at runtime, and its type is
# imported inside basic_auth_dependency (the stand-ins of the tests have no fastapi.security).
from secrets import compare_digest

WEBUI_API_PREFIX = "/sdapi/v1/"


def auth_dependencies(routes, api_auth: str | None) -> list:
    """The dependencies to give each of our routes: none without --api-auth, else the WebUI's own check."""
    if not api_auth:
        return []
    for route in routes:
        if str(getattr(route, "path", "")).startswith(WEBUI_API_PREFIX) and getattr(route, "dependencies", None):
            return list(route.dependencies)
    return [basic_auth_dependency(api_auth)]


def parse_credentials(api_auth: str) -> dict[str, str]:
    """--api-auth's "user:password,user2:password2" as the WebUI reads it (where the WebUI's own reading fails on
    a password holding ':', the rest of it is the password)."""
    credentials = {}
    for entry in api_auth.split(","):
        user, _, password = entry.partition(":")
        credentials[user] = password
    return credentials


def basic_auth_dependency(api_auth: str):
    """A FastAPI dependency that accepts exactly the users of `api_auth` (HTTP Basic), as the WebUI's Api.auth."""
    from fastapi import Depends, HTTPException
    from fastapi.security import HTTPBasic, HTTPBasicCredentials

    credentials = parse_credentials(api_auth)

    def check(given: HTTPBasicCredentials = Depends(HTTPBasic())):  # noqa: B008 (FastAPI's own idiom)
        password = credentials.get(given.username)
        if password is not None and compare_digest(given.password, password):
            return True
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})  # fmt: skip

    return Depends(check)
