"""Stand-in for fastapi (the WebUI's): routes are recorded, HTTPException carries status and detail."""


class HTTPException(Exception):
    def __init__(self, status_code, detail=None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def Body(*args, **kwargs):  # noqa: N802 (fastapi's name)
    return None


class FastAPI:
    def __init__(self):
        self.routes = {}

    def add_api_route(self, path, endpoint, **kwargs):
        self.routes[path] = {"endpoint": endpoint, **kwargs}
