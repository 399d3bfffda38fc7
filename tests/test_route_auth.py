"""Our routes under the WebUI's --api-auth (issue 14), on a real FastAPI app.

The WebUI (v1.8-v1.10, modules/api/api.py) gives each of its routes `dependencies=[Depends(self.auth)]` when
--api-auth is set; `WebUIApi` below is that code's shape, so the test holds our routes to the WebUI's answer.
"""

from __future__ import annotations

import base64
from secrets import compare_digest

import pytest
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from fastapi.testclient import TestClient

from depth2img.webui.route_auth import auth_dependencies, parse_credentials


class WebUIApi:
    """The WebUI's Api, as far as auth goes (its add_api_route and auth, v1.10.1)."""

    def __init__(self, app: FastAPI, api_auth: str | None):
        self.app, self.api_auth = app, api_auth
        self.credentials = {}
        for auth in (api_auth or "").split(",") if api_auth else []:
            user, password = auth.split(":")
            self.credentials[user] = password
        self.add_api_route("/sdapi/v1/options", lambda: {"ok": True}, methods=["GET"])

    def add_api_route(self, path, endpoint, **kwargs):
        if self.api_auth:
            return self.app.add_api_route(path, endpoint, dependencies=[Depends(self.auth)], **kwargs)
        return self.app.add_api_route(path, endpoint, **kwargs)

    def auth(self, credentials: HTTPBasicCredentials = Depends(HTTPBasic())):  # noqa: B008 (the WebUI's code)
        if credentials.username in self.credentials:
            if compare_digest(credentials.password, self.credentials[credentials.username]):
                return True
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})  # fmt: skip


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def app_with_our_route(api_auth: str | None, webui_api: bool) -> FastAPI:
    app = FastAPI()
    if webui_api:
        WebUIApi(app, api_auth)
    deps = auth_dependencies(app.routes, api_auth)
    app.add_api_route("/depth2img/v1/estimators", lambda: [], methods=["GET"], dependencies=deps)
    return app


@pytest.mark.parametrize("webui_api", [True, False], ids=["webui-dependency", "webui-without-api"])
def test_with_api_auth_our_routes_answer_as_the_webuis(webui_api):
    client = TestClient(app_with_our_route("u:p,admin:secret", webui_api))
    for path in ["/depth2img/v1/estimators"] + (["/sdapi/v1/options"] if webui_api else []):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=basic("u", "wrong")).status_code == 401
        wrong_user = client.get(path, headers=basic("nobody", "p"))
        assert wrong_user.status_code == 401 and wrong_user.headers["www-authenticate"].startswith("Basic")
        assert client.get(path, headers=basic("u", "p")).status_code == 200
        assert client.get(path, headers=basic("admin", "secret")).status_code == 200


def test_the_webuis_own_dependency_is_reused():
    app = FastAPI()
    WebUIApi(app, "u:p")
    [webui_route] = [route for route in app.routes if route.path == "/sdapi/v1/options"]
    assert auth_dependencies(app.routes, "u:p") == webui_route.dependencies


def test_without_api_auth_routes_are_open_as_the_webuis():
    assert auth_dependencies([], None) == [] and auth_dependencies([], "") == []
    client = TestClient(app_with_our_route(None, webui_api=True))
    assert client.get("/depth2img/v1/estimators").status_code == 200


def test_credentials_are_read_as_the_webui_reads_them():
    assert parse_credentials("u:p,v:a:b") == {"u": "p", "v": "a:b"}
