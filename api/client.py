"""Python client of the read API (stdlib only, so devices and scripts can use it as is)."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable


class ApiError(RuntimeError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class VitrinaClient:
    """``token``: a bearer token sent with every request; ``token_for(user_id)``: a token per user, for
    callers acting for several users (the demo's simulated devices, tests); ``ops_key``: X-Ops-Key."""

    def __init__(self, base_url: str = "http://127.0.0.1:18080", timeout_s: float = 5.0, token: str | None = None,
                 ops_key: str | None = None, token_for: Callable[[str], str | None] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.token, self.ops_key, self.token_for = token, ops_key, token_for

    def _headers(self, user_id: str | None) -> dict[str, str]:
        headers = {}
        token = self.token_for(user_id) if user_id is not None and self.token_for is not None else self.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.ops_key:
            headers["X-Ops-Key"] = self.ops_key
        return headers

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        request = urllib.request.Request(url, headers=self._headers(params.get("user_id")))
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read())
            except ValueError:
                body = {}
            raise ApiError(exc.code, body.get("error", "HTTP_ERROR"), body.get("message", str(exc))) from None

    def health(self) -> dict:
        return self.get("/healthz")

    def popular(self, limit: int = 20) -> list[dict]:
        return self.get("/v1/popular", limit=limit)["items"]

    def similar(self, item_id: str, limit: int | None = None) -> dict:
        """{"item_id", "version", "updated_at", "source", "support", "items": [{"item_id", "score"}]}."""
        return self.get(f"/v1/similar/{urllib.parse.quote(item_id)}", limit=limit)

    def autoplay_next(self, item_id: str, user_id: str | None = None, device_type: str = "TV",
                      age_limit: int | None = None, device_id: str | None = None, kids: bool | None = None,
                      streak: int | None = None) -> dict:
        """{"item_id", "next": {item_id, title, series_id, season, episode, ...} | None, "reason"
        ("next_episode" | "similar" | "none"), "still_watching_prompt", "similar_source", "skipped"}."""
        return self.get("/v1/autoplay-next", item_id=item_id, user_id=user_id, device_id=device_id,
                        device_type=device_type, age_limit=age_limit,
                        kids=None if kids is None else str(kids).lower(), streak=streak)

    def showcase(self, user_id: str | None, device_type: str = "TV", **params: Any) -> dict:
        return self.get("/v1/showcase", user_id=user_id, device_type=device_type, **params)

    def cache_pool(self, user_id: str | None, device_type: str, count: int,
                   exclude: list[str] | tuple[str, ...] = ()) -> list[dict]:
        """Titles to replenish a device's cache pool (GRF), none of ``exclude``: item_id, shelf_id, row,
        position, model_version, model_score. Fits ``DeviceModelClient.maintain_pool``'s ``replenish``."""
        return self.get("/v1/cache-pool", user_id=user_id, device_type=device_type, count=min(count, 100),
                        exclude=",".join(exclude) or None)["items"]

    def current_model(self, name: str = "ranking") -> dict:
        return self.get(f"/v1/models/{urllib.parse.quote(name)}/current")

    def model_versions(self, name: str = "ranking") -> dict:
        """The registry's versions of a model, newest first (state, metrics, last transition)."""
        return self.get(f"/v1/models/{urllib.parse.quote(name)}/versions")

    def upload_status(self, upload_id: str) -> dict:
        return self.get(f"/v1/uploads/{urllib.parse.quote(upload_id)}")

    def asset(self, asset_id: str, ttl_s: int | None = None) -> dict:
        """Renditions, thumbnails and HLS master of an asset with signed playback URLs."""
        return self.get(f"/v1/assets/{urllib.parse.quote(asset_id)}", ttl_s=ttl_s)
