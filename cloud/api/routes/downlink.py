"""Node downlink: desired config (versioned, signed per node), firmware releases, OTA jobs.

Writing a config or an OTA job stores the frame signed for the node and returns at once; the
downlink publisher (``fieldtrust cloud downlink``) delivers it to the node's gateway, and the job's
``status`` says how far it got.  Releases are platform-wide (any tenant's node may be sent one).
"""

from __future__ import annotations

from fastapi import APIRouter, status

from cloud.api.deps import AdminDep, ConnDep, KekDep
from cloud.downlink import service
from cloud.downlink.frames import FirmwareFile
from cloud.downlink.requests import ConfigAccepted, ConfigUpdate, NodeConfigState, OtaCreate, ReleaseCreate
from cloud.store import downlink as store

router = APIRouter(tags=["downlink"], dependencies=[AdminDep])
ADMIN = "admin"  # who made a change, until accounts exist
NODE = "/tenants/{tenant}/devices/{device}"


@router.put(NODE + "/config", response_model=ConfigAccepted,
            summary="Set a node's desired config: the next version, signed for the node, published to its gateway")
def put_config(tenant: str, device: str, body: ConfigUpdate, conn: ConnDep, kek: KekDep) -> ConfigAccepted:
    row = service.set_node_config(conn, tenant, device, body.cfg(), kek, ADMIN)
    return ConfigAccepted(device=row.device, version=row.version, status=row.status)


@router.get(NODE + "/config", response_model=NodeConfigState,
            summary="A node's desired config, the version it reported, and every version before")
def get_config(tenant: str, device: str, conn: ConnDep) -> NodeConfigState:
    history = store.config_history(conn, tenant, device)
    reported_version, _build, reported_at = store.reported(conn, tenant, device)
    return NodeConfigState(device=device, desired=history[0] if history else None,
                           reported_version=reported_version, reported_at=reported_at, history=history)


@router.post("/firmware/releases", status_code=status.HTTP_201_CREATED, response_model=store.Release,
             summary="Upload a firmware release (platform admin): its files and manifest")
def post_release(body: ReleaseCreate, conn: ConnDep) -> store.Release:
    files = [FirmwareFile(f.path, f.content()) for f in body.files]
    return service.create_release(conn, body.version, files, ADMIN)


@router.get("/firmware/releases", response_model=list[store.Release], summary="Firmware releases, newest first")
def get_releases(conn: ConnDep) -> list[store.Release]:
    return store.list_releases(conn)


@router.post(NODE + "/ota", status_code=status.HTTP_201_CREATED, response_model=store.OtaJob,
             summary="Send a release to a node: its manifest signed for the node, published after the files")
def post_ota(tenant: str, device: str, body: OtaCreate, conn: ConnDep, kek: KekDep) -> store.OtaJob:
    return service.create_ota_job(conn, tenant, device, body.version, kek, ADMIN)


@router.get(NODE + "/ota", response_model=list[store.OtaJob], summary="A node's OTA jobs with their status")
def get_ota(tenant: str, device: str, conn: ConnDep) -> list[store.OtaJob]:
    return store.list_ota_jobs(conn, tenant, device)
