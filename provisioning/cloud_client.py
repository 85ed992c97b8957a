"""The cloud's registration API as the technician's tool uses it (httpx, the admin bearer token for now).

Two kinds of failure matter in the field and are kept apart: :class:`CloudUnreachable` (no network,
DNS, timeout, or a cloud that answers 502/503/504: try again later, provisioning goes on offline) and
:class:`CloudRefused` (the cloud answered and said no: its own ``message`` is shown, since it names the
field or row at fault).  401 is :class:`CloudAuth`, a 404 on a farm :class:`FarmNotFound`.

The credential is the API's admin token today (``FIELDTRUST_ADMIN_TOKEN``); once accounts exist a
technician's token goes in the same header, nothing else changes here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from provisioning.errors import (
    ClaimRefused,
    CloudAuth,
    CloudRefused,
    CloudUnreachable,
    FarmNotFound,
    ReleaseNotFound,
)

API_PREFIX = "/api/v1"
TIMEOUT_S = 10.0
_UNAVAILABLE = (502, 503, 504)


@dataclass(frozen=True)
class CloudSettings:
    """Where the API is and the credential it requires."""

    api_url: str
    token: str | None

    @classmethod
    def from_env(cls, api_url: str | None = None, token: str | None = None) -> CloudSettings:
        import os

        url = api_url or os.environ.get("FIELDTRUST_API_URL") or "http://127.0.0.1:8080"
        return cls(url.rstrip("/"), token or os.environ.get("FIELDTRUST_ADMIN_TOKEN"))


class CloudClient:
    """One API; every method raises CloudUnreachable / CloudRefused (or a subclass), never httpx's errors."""

    def __init__(self, settings: CloudSettings, timeout: float = TIMEOUT_S, transport: httpx.BaseTransport | None = None
                 ) -> None:
        headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self.settings = settings
        self._http = httpx.Client(base_url=settings.api_url + API_PREFIX, headers=headers, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CloudClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        try:
            response = self._http.request(method, path, json=body,
                                          params={k: v for k, v in params.items() if v is not None} or None)
        except httpx.TransportError as exc:
            raise CloudUnreachable(f"cannot reach the cloud at {self.settings.api_url}: {exc or type(exc).__name__}"
                                   ) from None
        if response.status_code in _UNAVAILABLE:
            raise CloudUnreachable(f"the cloud at {self.settings.api_url} is unavailable "
                                   f"({response.status_code}: {_message(response)})")
        if response.status_code >= 400:
            error, message = _error(response)
            kind = CloudAuth if response.status_code == 401 else CloudRefused
            raise kind(response.status_code, error, message)
        return response.json() if response.content else None

    # -- registry ------------------------------------------------------------------------------------

    def check_farm(self, tenant: str, farm: str) -> dict[str, Any]:
        """The farm, or FarmNotFound (the tenant's missing too: its message says so)."""
        try:
            return self._call("GET", f"/tenants/{tenant}/farms/{farm}")
        except CloudRefused as exc:
            if exc.status == 404:
                raise FarmNotFound(f"farm {farm!r}: {exc.server_message}") from None
            raise

    def device(self, tenant: str, device_id: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", f"/tenants/{tenant}/devices/{device_id}")
        except CloudRefused as exc:
            if exc.status == 404:
                return None
            raise

    def register_node(self, tenant: str, device_id: str, key_hex: str, farm: str | None, gateway: str | None,
                      spec: str | None) -> dict[str, Any]:
        body = {"id": device_id, "kind": "node", "farm_id": farm, "gateway_id": gateway, "spec": spec,
                "key_hex": key_hex}
        return self._call("POST", f"/tenants/{tenant}/devices", {k: v for k, v in body.items() if v is not None})

    def redeem_claim(self, tenant: str, code: str, device_id: str, gateway: str | None = None) -> dict[str, Any]:
        """Spend a claim code on ``device_id``: it goes to the code's farm and field.  ClaimRefused when the code
        is unknown, used, revoked or expired (the cloud's message says which)."""
        body = {"code": code, "device_id": device_id} | ({"gateway_id": gateway} if gateway else {})
        try:
            return self._call("POST", f"/tenants/{tenant}/claim-codes/redeem", body)
        except CloudRefused as exc:
            if exc.status in (404, 409, 422):
                raise ClaimRefused(f"claim code refused: {exc.server_message}") from None
            raise

    def register_gateway(self, tenant: str, gateway_id: str, farm: str | None, name: str) -> dict[str, Any]:
        body = {"id": gateway_id, "farm_id": farm, "name": name}
        return self._call("POST", f"/tenants/{tenant}/gateways", {k: v for k, v in body.items() if v is not None})

    # -- maintenance ---------------------------------------------------------------------------------

    def record_event(self, tenant: str, device_id: str, kind: str, detail: dict[str, Any],
                     event_id: uuid.UUID | str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind, "detail": detail}
        if event_id is not None:
            body["id"] = str(event_id)
        return self._call("POST", f"/tenants/{tenant}/devices/{device_id}/events", body)

    def events(self, tenant: str, device_id: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/tenants/{tenant}/devices/{device_id}/events")

    def replace(self, tenant: str, old: str, new: str, note: str = "", revoke_old_key: bool = True
                ) -> dict[str, Any]:
        return self._call("POST", f"/tenants/{tenant}/devices/{old}/replace",
                          {"new_device": new, "note": note, "revoke_old_key": revoke_old_key})

    # -- node config and OTA (the downlink API) ------------------------------------------------------

    def put_config(self, tenant: str, device_id: str, config: dict[str, Any]) -> dict[str, Any]:
        """Replace the node's whole desired config (``ConfigUpdate``: calibration as ``[gain, offset]``);
        ``{device, version, status}``.  :mod:`provisioning.node_config` merges a change into the current one."""
        return self._call("PUT", f"/tenants/{tenant}/devices/{device_id}/config", config)

    def config(self, tenant: str, device_id: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", f"/tenants/{tenant}/devices/{device_id}/config")
        except CloudRefused as exc:
            if exc.status == 404:
                return None
            raise

    def push_ota(self, tenant: str, device_id: str, version: int) -> dict[str, Any]:
        """Send firmware release ``version`` (its build number) to the node: the OTA job.  ReleaseNotFound when no
        such release was published."""
        try:
            return self._call("POST", f"/tenants/{tenant}/devices/{device_id}/ota", {"version": version})
        except CloudRefused as exc:
            if exc.status == 404 and self.device(tenant, device_id) is not None:
                raise ReleaseNotFound(f"firmware build {version}: {exc.server_message}") from None
            raise


def _error(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
        return str(body.get("error", response.status_code)), str(body.get("message", response.text))
    except ValueError:
        return str(response.status_code), response.text.strip()[:200] or response.reason_phrase


def _message(response: httpx.Response) -> str:
    return _error(response)[1]
