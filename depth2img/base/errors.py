"""The errors a host shows its user as they are (a message naming the problem), shared by every stage."""

from __future__ import annotations


class Depth2ImgError(ValueError):
    """A job that must not run; the WebUI's API turns `status_code` into the HTTP status."""

    def __init__(self, message: str, status_code: int = 422):
        super().__init__(message)
        self.status_code = status_code
        self.detail = message


class SequenceError(ValueError):
    """A sequence that cannot start; the message names the problem and what to do."""
