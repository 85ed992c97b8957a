"""Each tenant's product shelf, credit policy and crop table, versioned in ``ft.credit_shelves``.

The three documents are the rural_credit files of the same names (``products.Shelf``, ``decision.Policy``,
``limit.CropTable``), validated by those models before they are stored, so a shelf that the library would
refuse never reaches the database.  The highest version is in force; assessments name the version they
used, so an old decision can be read against the shelf it was made with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ValidationError

from cloud.audit import log
from cloud.auth.principal import Principal
from cloud.credit.errors import CreditInvalid, NotDeployed
from device_specs.registry import UniqueKeyLoader
from rural_credit.assessment.decision import Policy, demo_policy
from rural_credit.assessment.limit import CropTable, demo_crop_table
from rural_credit.assessment.products import Shelf


@dataclass(frozen=True)
class ShelfVersion:
    """The documents in force for a tenant."""

    version: int
    shelf: Shelf
    policy: Policy
    crops: CropTable
    sha256: str


def _validated(model: type[BaseModel], raw: Any, what: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise CreditInvalid(f"{what}: {problems}") from None


def read_document(path: Path) -> Any:
    """A shelf, policy or crop table file (YAML or JSON) as plain data; CreditInvalid naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CreditInvalid(f"no file {path}")
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=UniqueKeyLoader)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise CreditInvalid(f"{path} cannot be read: {exc}") from None


def put_shelf(conn: psycopg.Connection, principal: Principal, tenant: str, shelf: Any, policy: Any = None,
              crops: Any = None) -> ShelfVersion:
    """Store a new version of ``tenant``'s documents (policy and crop table default to the library's samples)."""
    checked = (_validated(Shelf, shelf, "shelf"),
               _validated(Policy, policy, "policy") if policy is not None else demo_policy(),
               _validated(CropTable, crops, "crop table") if crops is not None else demo_crop_table())
    if checked[0].currency != checked[2].currency:
        raise CreditInvalid(f"the shelf lends in {checked[0].currency} but the crop table prices in "
                            f"{checked[2].currency}")
    docs = [d.model_dump(mode="json") for d in checked]
    digest = hashlib.sha256(json.dumps(docs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    row = conn.execute(
        "INSERT INTO ft.credit_shelves (tenant_id, version, shelf, policy, crops, sha256, created_by)"
        " SELECT %s, coalesce(max(version), 0) + 1, %s, %s, %s, %s, %s FROM ft.credit_shelves WHERE tenant_id = %s"
        " RETURNING version", (tenant, *map(Jsonb, docs), digest, principal.id, tenant)).fetchone()
    assert row is not None
    log.record(conn, principal, "credit.shelf_set", "credit_shelf", str(row[0]), tenant_id=tenant,
               detail={"sha256": digest, "products": [p.id for p in checked[0].products],
                       "policy": checked[1].version})
    return ShelfVersion(row[0], *checked, digest)


def current_shelf(conn: psycopg.Connection, tenant: str) -> ShelfVersion:
    """The version in force; NotDeployed when the tenant has none."""
    row = conn.execute("SELECT version, shelf, policy, crops, sha256 FROM ft.credit_shelves WHERE tenant_id = %s"
                       " ORDER BY version DESC LIMIT 1", (tenant,)).fetchone()
    if row is None:
        raise NotDeployed(f"tenant {tenant!r} has no product shelf: set one with `fieldtrust credit shelf`")
    version, shelf, policy, crops, digest = row
    return ShelfVersion(version, Shelf.model_validate(shelf), Policy.model_validate(policy),
                        CropTable.model_validate(crops), digest)
