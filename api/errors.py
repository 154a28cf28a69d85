"""JSON error answers of the read API: {"error": CODE, "message": ...} with the HTTP status."""
from __future__ import annotations

import json

from aiohttp import web


class JsonError(web.HTTPException):
    """An HTTP error with a JSON body; ``headers`` as aiohttp takes them."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        super().__init__(text=json.dumps({"error": code, "message": message}, ensure_ascii=False),
                         content_type="application/json", headers=headers)


class BadRequest(JsonError):
    """400 with a JSON body: {"error": code, "message": ...}."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(400, code, message)
