"""A node's remote configuration on the ops console: desired against reported side by side, the history of
versions, and a form that sets the next version through the same service as the API
(:func:`cloud.downlink.service.set_node_config`, checked by :class:`cloud.downlink.requests.ConfigUpdate`
with the node's own bounds), audited.

The form holds the whole config, as the API's body does (a field left empty takes the node's default); it
opens filled with the desired config, so changing one value keeps the others.  Calibration and send-on-
change deltas are rows of a metric and its numbers; empty rows are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from cloud.downlink import service
from cloud.downlink.requests import ConfigUpdate
from cloud.store import downlink, registry
from cloud.web import session, words
from cloud.web.ops import actions
from cloud.web.session import OpsUser
from cloud.web.templates import render, translator
from firmware import config as node_config

router = APIRouter()
SCALARS = ("interval_s", "heartbeat_s", "samples")
EXTRA_ROWS = 2


def form_values(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The form's fields for a stored ``cfg`` (None: the node's defaults, shown as empty fields)."""
    cfg = dict(config or {})
    calibration = [(m, str(v.get("scale", "")), str(v.get("offset", ""))) for m, v in
                   sorted((cfg.get("calibration") or {}).items())]
    deltas = [(m, str(v)) for m, v in sorted((cfg.get("deltas") or {}).items())]
    return {name: str(cfg[name]) if name in cfg else "" for name in SCALARS} | {
        "calibration": calibration + [("", "", "")] * EXTRA_ROWS, "deltas": deltas + [("", "")] * EXTRA_ROWS}


def parse_form(fields: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the API's body, the form's values to show again) from the posted fields."""
    body: dict[str, Any] = {}
    for name in SCALARS:
        text = fields.get(name, "").strip()
        if text:
            body[name] = int(text) if text.lstrip("-").isdigit() else text  # a non-number is refused by the model
    calibration: dict[str, list[Any]] = {}
    rows = []
    for n in range(node_config.MAX_METRICS + EXTRA_ROWS):
        metric, gain, offset = (fields.get(f"cal_{part}_{n}", "").strip() for part in ("metric", "gain", "offset"))
        if metric or gain or offset:
            calibration[metric] = [gain or None, offset or "0"]
            rows.append((metric, gain, offset))
    deltas: dict[str, Any] = {}
    delta_rows = []
    for n in range(node_config.MAX_METRICS + EXTRA_ROWS):
        metric, delta = (fields.get(f"delta_{part}_{n}", "").strip() for part in ("metric", "value"))
        if metric or delta:
            deltas[metric] = delta or None
            delta_rows.append((metric, delta))
    if calibration:
        body["calibration"] = calibration
    if deltas:
        body["deltas"] = deltas
    shown = {name: fields.get(name, "") for name in SCALARS} | {
        "calibration": rows + [("", "", "")] * EXTRA_ROWS, "deltas": delta_rows + [("", "")] * EXTRA_ROWS}
    return body, shown


def _errors(exc: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else str(e["msg"]) for e in exc.errors()]


def _page(request: Request, user: session.PageUser, device_id: str, *, values: dict[str, Any] | None = None,
          errors: list[str] | None = None, notice: str | None = None, status_code: int = 200) -> Response:
    with session.tenant_conn(request, user) as conn:
        try:
            device = registry.get_device(conn, user.tenant_id, device_id)
        except registry.NotFound:
            return render(request, "base/not_found.html", {"user": user, "area": "ops"}, status_code=404)
        history = downlink.config_history(conn, user.tenant_id, device_id) if device.kind == "node" else []
        reported = downlink.reported(conn, user.tenant_id, device_id)
    desired = history[0] if history else None
    reported_version = next((v for v in history if v.version == reported[0]), None)
    return render(request, "ops/config.html", {
        "user": user, "device": device, "history": history, "desired": desired, "reported": reported,
        "reported_config": reported_version.config if reported_version else None,
        "values": values or form_values(desired.config if desired else None), "errors": errors or [],
        "notice": notice, "bounds": node_config.BOUNDS, "defaults": node_config.DEFAULTS,
        "metrics": sorted(words.METRICS), "can_write": user.principal.can(actions.WRITE)}, status_code=status_code)


@router.get("/devices/{device_id}/config")
def config_page(request: Request, device_id: str, user: OpsUser, notice: str | None = None) -> Response:
    return _page(request, user, device_id, notice=notice)


@router.post("/devices/{device_id}/config")
async def set_config(request: Request, device_id: str, user: OpsUser) -> Response:
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str) and len(v) <= 200}
    refusal = actions.check(request, user, fields.get(session.FORM_FIELD))
    if refusal is not None:
        return refusal
    _, _n = translator(request)
    body, shown = parse_form(fields)
    try:
        update = ConfigUpdate.model_validate(body)
    except ValidationError as exc:
        return _page(request, user, device_id, values=shown, errors=_errors(exc), status_code=422)
    try:
        kek = session.settings_of(request).kek_bytes()
    except ValueError:
        return _page(request, user, device_id, values=shown, status_code=503,
                     errors=[_("Keys cannot be used on this server (no key-encryption key is configured).")])
    try:
        with session.tenant_conn(request, user) as conn:
            version = service.set_node_config(conn, user.tenant_id, device_id, update.cfg(), kek, actions.by(user))
            actions.audit(conn, user, "node_config.set", "device", device_id, fields.get("note", ""),
                          version=version.version, config=update.cfg())
    except registry.NotFound:
        return render(request, "base/not_found.html", {"user": user, "area": "ops"}, status_code=404)
    except registry.Conflict as exc:
        return _page(request, user, device_id, values=shown, errors=[str(exc)], status_code=409)
    return actions.back(f"/ops/devices/{device_id}/config", "/ops", "config_set")
