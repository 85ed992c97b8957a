"""The credit service (cloud/credit) on SYNTHETIC farm data written into the store, with a small scorecard
trained on a synthetic world and deployed from a model registry folder, as ft_app under row-level security.

:func:`build_world` (also used by tests/test_credit_api.py) writes a tenant's farmers, farms, fields with the
season, devices and 21 days of raw readings (``hardware.synthetic_farms.farm_readings``) through the ingest's
write path, refreshes the rollups, and deploys the shelf and the model.  One farm's weather station clock
runs 6 h late (low data trust); one farmer gave no consent; one consented to registry and soil data only.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from cloud.auth.principal import Principal
from cloud.auth.scopes import admin_principal, user_principal
from cloud.consent import texts
from cloud.consent.errors import ConsentRequired
from cloud.credit import batch, models, queue, records, service, shelves
from cloud.credit.errors import CreditConflict, CreditForbidden, CreditInvalid, CreditNotFound
from cloud.store import partitions, rollups, writes
from fieldtrust.demo import credit_world as experiments
from hardware import synthetic_farms as sf
from rural_credit.assessment.products import SHELVES_DIR
from rural_credit.scorecard.registry import DataSummary, ModelRegistry
from rural_credit.scorecard.training import TrainingConfig, fit_scorecard
from tests.support.app_db import app_connect

SEASON, START, DAYS = "2025-long-rains", "2025-04-01", 21
#: the synthetic signal model's air temperature peaks at 15:00 UTC: local solar time near longitude 0
UNITS = {"air_temperature": "Cel", "rainfall": "mm", "soil_moisture": "%"}
SPECS = {"weather": "renke-weather-fsxcs-n01", "soil": "capacitive-soil-moisture-v1-2"}
#: farm number → how the farm differs: "clock" (weather clock 6 h late), "no_consent", "soil_only"
FARM_KINDS = {1: "clean", 2: "clean", 3: "clock", 4: "no_consent", 5: "soil_only"}


def train_registry(folder: Path) -> Path:
    """A scorecard trained on a SYNTHETIC world of 21-day seasons, registered, approved by a second person and
    made champion: the registry folder ``fieldtrust credit deploy`` reads."""
    world = sf.generate_world(1000, seed=21, season_days=DAYS)
    frame = experiments.training_frame(world)
    fit = fit_scorecard(frame.drop(columns=[experiments.TARGET]), frame[experiments.TARGET].to_numpy(),
                        TrainingConfig(n_bootstrap=0), name="synthetic-farm-credit")
    registry = ModelRegistry(folder)
    bads = int(frame[experiments.TARGET].sum())
    summary = DataSummary(sha256="0" * 64, source="SYNTHETIC world", rows=len(frame), bads=bads,
                          bad_rate=bads / len(frame))
    card = registry.register(fit.model, "trainer", summary, {"synthetic": True})
    registry.approve(card.version, "second-officer")
    registry.promote(card.version)
    return folder


@dataclass
class World:
    owner_url: str
    tenant: str
    farms: dict[int, str]
    farmers: dict[int, str]

    @contextmanager
    def tx(self, tenant: str | None = None) -> Iterator[psycopg.Connection]:
        """One transaction of ft_app in the tenant's scope, committed at the end."""
        with app_connect(self.owner_url, tenant=tenant or self.tenant) as conn:
            yield conn
            conn.commit()

    def officer(self, n: int = 1) -> Principal:
        return user_principal(f"{self.tenant}-officer{n}", self.tenant, ["credit_officer"], None, "10.0.0.1")

    def farmer(self, k: int) -> Principal:
        return user_principal(f"{self.tenant}-user{k}", self.tenant, ["farmer"], self.farmers[k], "10.0.0.2")

    def clerk(self) -> Principal:
        return user_principal(f"{self.tenant}-clerk", self.tenant, ["clerk"], None, "10.0.0.3")

    def apply(self, k: int, amount: float = 300.0, **changes: object) -> service.ApplicationView:
        inp = service.ApplicationInput(**({"farm_id": self.farms[k], "amount": amount, "term_months": 6,
                                           "purpose": "inputs", "prior_loans": 2, "prior_repaid": 2} | changes))
        with self.tx() as conn:
            return service.submit(conn, self.farmer(k), self.tenant, inp)

    def audit(self, action: str) -> list[tuple]:
        with psycopg.connect(self.owner_url) as conn:
            return conn.execute("SELECT actor_id, target_id, farmer_id, purpose, detail FROM ft.audit_log"
                                " WHERE tenant_id = %s AND action = %s ORDER BY id", (self.tenant, action)).fetchall()


def build_world(owner_url: str, registry_folder: Path, label: str = "a", kinds: dict[int, str] | None = None) -> World:
    """A tenant with the farms of ``kinds`` (:data:`FARM_KINDS`), their half-hourly readings and consents, the demo
    shelf and the model."""
    kinds = kinds or FARM_KINDS
    tenant = f"cr{label}-{secrets.token_hex(3)}"
    readings = sf.farm_readings(farms=len(kinds), days=DAYS, start=START, interval_s=1800)
    faulty = [f"syn-farm-{k}-weather" for k, kind in kinds.items() if kind == "clock"]
    for device in faulty:
        readings = sf.clock_off(readings, device, hours=6)
    events = sf.provisioning_events(readings)
    rename = {f"syn-farm-{k}": f"{tenant}-farm{k}" for k in kinds}
    farms = {k: rename[f"syn-farm-{k}"] for k in kinds}
    farmers = {k: f"{tenant}-farmer{k}" for k in kinds}
    with psycopg.connect(owner_url) as conn:
        conn.execute("INSERT INTO ft.tenants (id, name) VALUES (%s, %s)", (tenant, f"Credit tenant {label}"))
        conn.execute("INSERT INTO ft.gateways (id, tenant_id, name) VALUES (%s, %s, 'mast')", (f"{tenant}-gw", tenant))
        for k, farm in farms.items():
            conn.execute("INSERT INTO ft.farmers (id, tenant_id, name, village) VALUES (%s, %s, %s, %s)",
                         (farmers[k], tenant, f"Farmer {k}", "Hekou"))
            conn.execute("INSERT INTO ft.farms (id, tenant_id, name, area_ha, crop, farmer_id, tenure, village,"
                         " latitude, longitude) VALUES (%s, %s, %s, 2.0, 'maize', %s, 'owned', 'Hekou', 5.6, -0.2)",
                         (farm, tenant, f"Farm {k}", farmers[k]))
            conn.execute("INSERT INTO ft.fields (id, tenant_id, farm_id, name, area_ha, crop, season, season_start,"
                         " season_end) VALUES (%s, %s, %s, 'main', 2.0, 'maize', %s, %s, %s)",
                         (f"{farm}-f1", tenant, farm, SEASON, START,
                          (pd.Timestamp(START) + pd.Timedelta(days=DAYS)).date()))
            for suffix, spec in SPECS.items():
                kind = "bus" if suffix == "weather" else "node"
                conn.execute("INSERT INTO ft.devices (id, tenant_id, farm_id, gateway_id, kind, spec_key)"
                             " VALUES (%s, %s, %s, %s, %s, %s)", (f"{farm}-{suffix}", tenant, farm, f"{tenant}-gw",
                                                                  kind, spec))
            scopes = {"clean": ["registry", "soil", "weather"], "clock": ["registry", "soil", "weather"],
                      "soil_only": ["registry", "soil"], "no_consent": None}[kinds[k]]
            if scopes is not None:
                conn.execute("INSERT INTO ft.consents (id, tenant_id, farmer_id, purpose, scopes, expires_at,"
                             " granted_by, text_version, language) VALUES (%s, %s, %s, 'credit_assessment', %s,"
                             " now() + interval '30 days', %s, %s, 'en')",
                             (f"c_{secrets.token_hex(8)}", tenant, farmers[k], scopes, farmers[k], texts.VERSION))
        for device, at in zip(events["device_id"], events["at"], strict=True):
            conn.execute("INSERT INTO ft.device_events (id, tenant_id, device_id, kind, at, by) VALUES"
                         " (gen_random_uuid(), %s, %s, 'provisioned', %s, 'technician')",
                         (tenant, device.replace(device.rsplit("-", 1)[0], rename[device.rsplit("-", 1)[0]]), at))
        metric = writes.metric_ids(conn, list(UNITS.items()))
        rows = readings.assign(device_id=readings["device_id"].str.rsplit("-", n=1).str[0].map(rename) + "-"
                               + readings["device_id"].str.rsplit("-", n=1).str[1])
        rows = rows.sort_values(["device_id", "metric", "ts"]).reset_index(drop=True)
        rows["seq"] = rows.groupby("device_id").cumcount() + 1
        partitions.ensure_for(conn, [t.to_pydatetime() for t in pd.date_range(rows["ts"].min().floor("D"),
                                                                               rows["ts"].max(), freq="D")])
        batch_rows = [(tenant, r.device_id, metric[(r.metric, UNITS[r.metric])], r.ts.to_pydatetime(), float(r.value),
                       None, 0, 1 if r.origin == "node" else 2, 1, int(r.seq)) for r in rows.itertuples()]
        assert writes.write_readings(conn, batch_rows) == len(batch_rows)
        conn.commit()
        rollups.refresh_dirty(conn)
        conn.commit()
    world = World(owner_url, tenant, farms, farmers)
    admin = admin_principal().model_copy(update={"id": "cli:test"})
    with world.tx() as conn:
        shelves.put_shelf(conn, admin, tenant, shelves.read_document(SHELVES_DIR / "demo.yaml"))
        models.deploy(conn, admin, tenant, registry_folder)
    return world


@pytest.fixture(scope="module")
def registry_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_registry(tmp_path_factory.mktemp("credit-models") / "registry")


@pytest.fixture(scope="module")
def world(module_app_db, registry_folder: Path) -> World:
    return build_world(module_app_db.owner_url, registry_folder)


def test_a_farmer_with_consent_applies_and_gets_a_recommendation(world: World) -> None:
    view = world.apply(1)
    app, a = view.application, view.assessment
    assert app.status == "scored" and app.farmer_id == world.farmers[1] and app.season == SEASON
    assert a is not None and a.recommendation in ("approve", "refer", "decline")
    assert a.grade in "ABCDE" and 0 <= a.pd <= 1 and a.model_name == "synthetic-farm-credit"
    assert a.trust is not None and a.trust >= 0.6 and len(a.provenance_sha256 or "") == 64
    assert set(a.data_scopes) == {"soil", "weather"} and a.data_withheld == []
    assert {"origin", "coverage", "clock", "flat_line"} <= set(a.trust_parts)
    assert a.features["gdd"] is not None and a.features["moisture_stress_days"] is not None
    assert {c["characteristic"] for c in a.contributions} >= {"amount", "purpose"}
    assert all(set(r["text"]) == {"en", "zh-CN"} for r in a.reasons)
    assert a.recommendation != "decline" or a.decision["reasons"][0]["key"] in ("score_low", "no_product")
    assert [p["product_id"] for p in view.matched_products] == [p["product_id"] for p in a.products if p["eligible"]]
    # the reads of the farmer's data went through the consent gate, each with its purpose
    reads = [r for r in world.audit("farmer.data_read") if r[1] == app.id]
    assert sorted(r[4]["scope"] for r in reads) == ["registry", "soil", "weather"]
    assert all(r[2] == world.farmers[1] and r[3] == "credit_assessment" for r in reads)
    assert [r[1] for r in world.audit("credit.assessed")].count(app.id) == 1


def test_without_consent_the_application_is_refused_and_nothing_is_read(world: World) -> None:
    with pytest.raises(ConsentRequired, match="has not consented"), world.tx() as conn:
        service.submit(conn, world.farmer(4), world.tenant, service.ApplicationInput(
            farm_id=world.farms[4], amount=300, term_months=6, purpose="inputs"))
    with world.tx() as conn:
        assert queue.queue(conn, world.tenant, queue.Filters(farm_id=world.farms[4])) == []
    assert not [r for r in world.audit("farmer.data_read") if r[2] == world.farmers[4]]


def test_a_withheld_data_scope_is_not_read_and_counts_as_missing(world: World) -> None:
    a = world.apply(5).assessment
    assert a is not None and a.data_scopes == ["soil"] and a.data_withheld == ["weather"]
    assert a.features["gdd"] is None and a.features["moisture_stress_days"] is not None
    refused = [r for r in world.audit("data_use_refused") if r[2] == world.farmers[5]]
    assert refused and refused[-1][4]["scope"] == "weather"


def test_low_data_trust_is_referred_never_declined(world: World) -> None:
    for amount in (300.0, 1900.0):
        a = world.apply(3, amount=amount).assessment
        assert a is not None and a.trust is not None and a.trust < 0.6
        assert a.recommendation == "refer"
        assert "data_trust_low" in [r["key"] for r in a.decision["reasons"]]
        assert "air_temperature" in a.untrusted_sources or a.trust_parts["clock"] < 1


def test_an_override_needs_a_reason_and_a_second_officer(world: World) -> None:
    app = world.apply(2).application
    with world.tx() as conn:
        recommended = records.current_assessment(conn, world.tenant, app.id).recommendation
    other = "decline" if recommended != "decline" else "approve"
    with pytest.raises(CreditInvalid, match="reason"), world.tx() as conn:
        service.decide(conn, world.officer(1), world.tenant, app.id, other, "too short")
    with world.tx() as conn:
        pending = service.decide(conn, world.officer(1), world.tenant, app.id, other,
                                 "field visit: the farm's dam failed in May")
    assert pending.status == "pending" and pending.override and pending.maker == world.officer(1).id
    with world.tx() as conn:
        assert records.application(conn, world.tenant, app.id).status == "scored"  # the recommendation stands
    with pytest.raises(CreditForbidden, match="maker-checker"), world.tx() as conn:
        service.check_override(conn, world.officer(1), world.tenant, app.id, pending.id, True)
    with pytest.raises(CreditConflict, match="waiting for a second officer"), world.tx() as conn:
        service.decide(conn, world.officer(2), world.tenant, app.id, recommended)
    # the database refuses a checker who is the maker, whatever the code does
    with pytest.raises(psycopg.errors.CheckViolation), world.tx() as conn:
        conn.execute("UPDATE ft.credit_decisions SET checker = maker, status = 'in_force' WHERE id = %s", (pending.id,))
    with world.tx() as conn:
        checked = service.check_override(conn, world.officer(2), world.tenant, app.id, pending.id, True, "agreed")
        final = records.application(conn, world.tenant, app.id)
    assert checked.status == "in_force" and checked.checker == world.officer(2).id
    assert final.outcome == other and final.status == service.STATUS_OF[other]
    proposed, approved = world.audit("credit.override_proposed"), world.audit("credit.override_approved")
    assert any(r[1] == app.id and r[0] == world.officer(1).id for r in proposed)
    assert any(r[1] == app.id and r[0] == world.officer(2).id and r[4]["maker"] == world.officer(1).id
               for r in approved)


def test_a_decline_issues_a_notice_and_an_appeal_puts_it_before_a_person(world: World) -> None:
    app = world.apply(1, amount=350.0).application
    with world.tx() as conn:
        recommended = records.current_assessment(conn, world.tenant, app.id).recommendation
        first = service.decide(conn, world.officer(1), world.tenant, app.id, "decline",
                               "" if recommended == "decline" else "repayment capacity doubtful after visit")
    if first.status == "pending":
        with world.tx() as conn:
            service.check_override(conn, world.officer(2), world.tenant, app.id, first.id, True)
    with world.tx() as conn:
        view = service.get(conn, world.farmer(1), world.tenant, app.id)
    assert view.application.status == "declined" and len(view.notices) == 1
    notice = view.notices[0]
    assert "appeal" in notice.text_en.lower() and "申诉" in notice.text_zh or "复议" in notice.text_zh
    with pytest.raises(CreditInvalid, match="note"), world.tx() as conn:
        service.appeal(conn, world.farmer(1), world.tenant, app.id, "   ")
    with world.tx() as conn:
        filed = service.appeal(conn, world.farmer(1), world.tenant, app.id, "The dam is repaired; see the receipt.")
        waiting = queue.queue(conn, world.tenant, queue.Filters(status=["appealed"]))
    assert filed.status == "appealed" and app.id in [r.id for r in waiting]
    with pytest.raises(CreditConflict), world.tx() as conn:
        service.appeal(conn, world.farmer(1), world.tenant, app.id, "again")
    with world.tx() as conn:
        service.start_review(conn, world.officer(2), world.tenant, app.id)
        assert records.application(conn, world.tenant, app.id).status == "under_review"
    outcome = records.Outcome.__args__  # the recommendation decides whether changing the outcome is an override
    assert "approve" in outcome
    with world.tx() as conn:
        rec = records.current_assessment(conn, world.tenant, app.id).recommendation
        decided = service.decide(conn, world.officer(2), world.tenant, app.id, rec, "Reviewed with the farmer.")
        final = records.application(conn, world.tenant, app.id)
        closed = records.appeals(conn, world.tenant, app.id)[0]
    assert decided.status == "in_force" and final.status == "decided" and final.outcome == rec
    assert closed.status == ("upheld" if rec == "decline" else "changed") and closed.decision_id == decided.id


def test_cancel_withdraws_what_is_pending(world: World) -> None:
    app = world.apply(2, amount=250.0).application
    with world.tx() as conn:
        service.cancel(conn, world.farmer(2), world.tenant, app.id, "bought seed with savings")
        assert records.application(conn, world.tenant, app.id).status == "cancelled"
    with pytest.raises(CreditConflict), world.tx() as conn:
        service.decide(conn, world.officer(1), world.tenant, app.id, "approve")
    with pytest.raises(CreditNotFound), world.tx() as conn:
        service.cancel(conn, world.farmer(1), world.tenant, app.id)  # another farmer's application


def test_batch_scoring_scores_every_consenting_farm(world: World) -> None:
    with world.tx() as conn:
        run = batch.score_tenant(conn, world.officer(1), world.tenant,
                                 batch.NotionalApplication(amount=400, term_months=6, purpose="inputs"))
    by_farm = {s.farm_id: s for s in run.scores}
    assert run.farms == len(FARM_KINDS) and set(run.skipped) == {world.farms[4]}
    assert "no consent" in run.skipped[world.farms[4]]
    assert set(by_farm) == {world.farms[k] for k in (1, 2, 3, 5)}
    assert by_farm[world.farms[3]].outcome == "refer" and by_farm[world.farms[3]].trust < 0.6
    assert by_farm[world.farms[1]].trust >= 0.6 and by_farm[world.farms[5]].season == SEASON
    with psycopg.connect(world.owner_url) as conn:
        stored = conn.execute("SELECT count(*) FROM ft.credit_batch_scores WHERE run_id = %s", (run.id,)).fetchone()
    assert stored == (4,)


def test_another_tenant_sees_nothing(world: World, module_app_db, registry_folder: Path) -> None:
    app = world.apply(1, amount=200.0).application
    other = build_world(module_app_db.owner_url, registry_folder, label="b", kinds={1: "clean"})
    with other.tx() as conn:
        with pytest.raises(CreditNotFound):
            records.application(conn, world.tenant, app.id)
        assert queue.queue(conn, world.tenant) == []
        assert app.id not in [r.id for r in queue.queue(conn, other.tenant)]
    with pytest.raises(CreditNotFound), other.tx() as conn:
        service.submit(conn, other.officer(), other.tenant, service.ApplicationInput(
            farm_id=world.farms[1], amount=300, term_months=6, purpose="inputs"))


def test_only_an_approved_model_is_deployed(world: World, registry_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "registry"
    shutil.copytree(registry_folder, folder)
    registry = ModelRegistry(folder)
    card = registry.card("v0001")
    draft = registry.register(registry.load_model("v0001"), "trainer", card.data, card.metrics)
    with pytest.raises(CreditInvalid, match="draft: only an approved model"), world.tx() as conn:
        models.deploy(conn, world.officer(), world.tenant, folder, draft.version)
    with world.tx() as conn:
        assert models.champion(conn, world.tenant)[0].version == "v0001"


def test_the_command_line_deploys_a_model_and_sets_a_shelf(world: World, registry_folder: Path) -> None:
    from typer.testing import CliRunner

    from fieldtrust.cli.credit import app

    runner = CliRunner()
    shelf = runner.invoke(app, ["shelf", "--tenant", world.tenant, "--shelf", str(SHELVES_DIR / "demo.yaml"),
                                "--database-url", world.owner_url])
    assert shelf.exit_code == 0, shelf.output
    assert "shelf version 2" in shelf.output
    deployed = runner.invoke(app, ["deploy", "--model", str(registry_folder), "--tenant", world.tenant,
                                   "--database-url", world.owner_url])
    assert deployed.exit_code == 0, deployed.output
    assert "v0001" in deployed.output and world.tenant in deployed.output
    unknown = runner.invoke(app, ["deploy", "--model", str(registry_folder), "--tenant", "no-such-tenant",
                                  "--database-url", world.owner_url])
    assert unknown.exit_code != 0 and "no tenant" in unknown.output
    assert [r[0] for r in world.audit("credit.model_deployed")][-1].startswith("cli:")
