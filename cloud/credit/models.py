"""Scorecards deployed to a tenant: ``fieldtrust credit deploy --model DIR --tenant T``.

A model comes from a scorecard registry folder (``rural_credit.scorecard.registry``): its champion (else
the version named), which must be *approved* (four eyes: someone other than its trainer signed it off).
The model JSON is stored exactly as the registry holds it, with its SHA-256 (the database recomputes it)
and its model card; the deployed version becomes the tenant's champion.  :func:`assessor` builds the
``rural_credit`` Assessor from the champion and the shelf in force; parsed models are cached by SHA-256.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from cloud.audit import log
from cloud.auth.principal import Principal
from cloud.credit.errors import CreditInvalid, NotDeployed
from cloud.credit.shelves import ShelfVersion, current_shelf
from rural_credit.assessment.decision import PolicyError
from rural_credit.assessment.pipeline import AssessmentError, Assessor
from rural_credit.scorecard.model_file import ModelFileError
from rural_credit.scorecard.registry import ModelCard, ModelRegistry, RegistryError
from rural_credit.scorecard.scoring import ScoreModel


@dataclass(frozen=True)
class DeployedModel:
    name: str
    version: str
    model_sha256: str
    card: dict


@dataclass(frozen=True)
class Scoring:
    """What an assessment runs with: the Assessor and the versions it is made of."""

    assessor: Assessor
    model: DeployedModel
    shelf: ShelfVersion


def _from_folder(folder: Path, version: str | None) -> tuple[ModelCard, str]:
    """The card and the model JSON text of ``folder`` (a registry, or one version's folder ``DIR/v0001``)."""
    folder = Path(folder)
    if (folder / "model.json").is_file() and version is None:
        folder, version = folder.parent, folder.name
    try:
        card, _ = ModelRegistry(folder).resolve(version)  # checks the file against its card's SHA-256
    except (RegistryError, ModelFileError) as exc:
        raise CreditInvalid(str(exc)) from None
    if card.state != "approved":
        raise CreditInvalid(f"{card.name} {card.version} is {card.state}: only an approved model is deployed "
                            f"(`fieldtrust credit approve --model {folder} --version {card.version}`)")
    return card, (folder / card.version / "model.json").read_text(encoding="utf-8")


def deploy(conn: psycopg.Connection, principal: Principal, tenant: str, folder: Path,
           version: str | None = None) -> DeployedModel:
    """Deploy a registry's champion (or ``version``) to ``tenant`` as its champion."""
    card, text = _from_folder(folder, version)
    try:
        scorer = _score_model(text)
    except ModelFileError as exc:
        raise CreditInvalid(str(exc)) from None
    shelf = _shelf_or_none(conn, tenant)
    if shelf is not None:  # refuse a model the tenant's policy cannot read before it can score anything
        _assessor(scorer, shelf, f"{card.name} {card.version}")
    conn.execute("UPDATE ft.credit_models SET champion = false WHERE tenant_id = %s AND champion", (tenant,))
    card_json = json.loads(card.model_dump_json())
    conn.execute(
        "INSERT INTO ft.credit_models (tenant_id, name, version, model_json, model_sha256, card, champion,"
        " deployed_by) VALUES (%s, %s, %s, %s, %s, %s, true, %s)"
        " ON CONFLICT (tenant_id, name, version) DO UPDATE SET champion = true, deployed_by = EXCLUDED.deployed_by,"
        " deployed_at = now()",
        (tenant, card.name, card.version, text, card.model_sha256, Jsonb(card_json), principal.id))
    log.record(conn, principal, "credit.model_deployed", "credit_model", f"{card.name} {card.version}",
               tenant_id=tenant, detail={"model_sha256": card.model_sha256, "data_sha256": card.data.sha256,
                                         "approved_by": card.approved_by})
    return DeployedModel(card.name, card.version, card.model_sha256, card_json)


def _shelf_or_none(conn: psycopg.Connection, tenant: str) -> ShelfVersion | None:
    try:
        return current_shelf(conn, tenant)
    except NotDeployed:
        return None


@lru_cache(maxsize=16)
def _score_model(text: str) -> ScoreModel:
    return ScoreModel.from_json(text)


def _assessor(scorer: ScoreModel, shelf: ShelfVersion, label: str) -> Assessor:
    try:
        return Assessor(scorer, shelf.policy, shelf.shelf, shelf.crops, label)
    except (AssessmentError, PolicyError) as exc:
        raise CreditInvalid(f"model {label} does not fit shelf version {shelf.version}: {exc}") from None


def champion(conn: psycopg.Connection, tenant: str) -> tuple[DeployedModel, str]:
    """The tenant's champion and its model JSON; NotDeployed when there is none."""
    row = conn.execute("SELECT name, version, model_sha256, card, model_json FROM ft.credit_models"
                       " WHERE tenant_id = %s AND champion", (tenant,)).fetchone()
    if row is None:
        raise NotDeployed(f"tenant {tenant!r} has no credit model: deploy one with "
                          f"`fieldtrust credit deploy --model DIR --tenant {tenant}`")
    return DeployedModel(*row[:4]), row[4]


def scoring(conn: psycopg.Connection, tenant: str) -> Scoring:
    """The champion with the shelf in force, ready to assess."""
    model, text = champion(conn, tenant)
    shelf = current_shelf(conn, tenant)
    return Scoring(_assessor(_score_model(text), shelf, f"{model.name} {model.version}"), model, shelf)
