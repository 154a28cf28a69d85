"""Minimal Confluent Schema Registry REST client (register, fetch by id), stdlib only."""
from __future__ import annotations

import json
import urllib.error
import urllib.request


class SchemaRegistryError(RuntimeError):
    pass


class SchemaRegistryClient:
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict | None = None) -> dict | None:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise SchemaRegistryError(f"{method} {self.url}{path}: HTTP {exc.code} {exc.read()[:300]!r}") from exc
        except urllib.error.URLError as exc:
            raise SchemaRegistryError(f"schema registry {self.url} unreachable: {exc.reason}") from exc

    def register(self, subject: str, schema: str) -> int:
        answer = self._call("POST", f"/subjects/{subject}/versions", {"schema": schema, "schemaType": "AVRO"})
        if not answer or "id" not in answer:
            raise SchemaRegistryError(f"registering {subject} returned {answer!r}")
        return int(answer["id"])

    def schema_by_id(self, schema_id: int) -> str | None:
        answer = self._call("GET", f"/schemas/ids/{schema_id}")
        return None if answer is None else answer["schema"]
