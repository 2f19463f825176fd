"""A small client for the Kubernetes API of the tests' control plane: bearer token, the tests' CA, JSON.

Enough for the tests and the fake kubelet (get, list, create, patch, delete); the Pulumi provider and
kubectl talk to the same server through the kubeconfig the control plane writes.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


@dataclass(frozen=True)
class KubeApi:
    """One API server: its URL, the CA that signed its serving certificate, an admin token."""

    server: str
    ca_file: Path
    token: str

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        """Sends one request; returns the decoded JSON answer (None for an empty one)."""
        raw = self._send(method, path, body, content_type)
        return json.loads(raw) if raw else None

    def text(self, path: str) -> str:
        """GET a plain-text endpoint such as /readyz."""
        return self._send("GET", path, None, "application/json").decode()

    def _send(self, method: str, path: str, body: Any, content_type: str) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json, */*")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._context(), timeout=30) as response:
                raw: bytes = response.read()
        except urllib.error.HTTPError as error:
            raise ApiError(method, path, error.code, error.read().decode(errors="replace")) from None
        return raw

    def get(self, path: str) -> Any:
        """GET; raises ApiError (status 404 for a missing object)."""
        return self.request("GET", path)

    def exists(self, path: str) -> bool:
        """Whether GET finds the object."""
        try:
            self.get(path)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def items(self, path: str) -> list[dict[str, Any]]:
        """The items of a list path."""
        listed: list[dict[str, Any]] = self.get(path)["items"]
        return listed

    def create(self, path: str, body: dict[str, Any]) -> Any:
        """POST an object to a collection."""
        return self.request("POST", path, body)

    def patch(self, path: str, body: dict[str, Any], content_type: str = MERGE_PATCH) -> Any:
        """PATCH (a JSON merge patch unless told otherwise)."""
        return self.request("PATCH", path, body, content_type)

    def delete(self, path: str, grace_seconds: int | None = None) -> Any:
        """DELETE, optionally with a grace period (0 removes a pod at once, as a kubelet does)."""
        body = None if grace_seconds is None else {"gracePeriodSeconds": grace_seconds}
        return self.request("DELETE", path, body)
