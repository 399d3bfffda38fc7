"""Stand-in for fastapi (the WebUI's): routes are recorded (path, endpoint, dependencies, ...), HTTPException
carries status and detail, Depends wraps its callable."""

from types import SimpleNamespace


class HTTPException(Exception):
    def __init__(self, status_code, detail=None, headers=None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


class Response:
    def __init__(self, content=b"", media_type=None):
        self.body = content
        self.media_type = media_type


def Body(*args, **kwargs):  # noqa: N802 (fastapi's name)
    return None


def Depends(dependency=None):  # noqa: N802 (fastapi's name)
    return SimpleNamespace(dependency=dependency)


class FastAPI:
    def __init__(self):
        self.routes = []

    def add_api_route(self, path, endpoint, dependencies=None, **kwargs):
        route = SimpleNamespace(path=path, endpoint=endpoint, dependencies=list(dependencies or []), **kwargs)
        self.routes.append(route)
