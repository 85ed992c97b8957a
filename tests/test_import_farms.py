"""Importing farms from CSV: a row-by-row report, valid rows kept, idempotent reruns, audited changes.

The import runs as the services' role (ft_app, under row-level security) in the tenant's scope, as it
does from `fieldtrust cloud import-farms`; the command itself is run once end to end.
"""

from __future__ import annotations

import psycopg
import pytest
from typer.testing import CliRunner

from cloud.auth.scopes import admin_principal
from cloud.store import farm_import, farmers, registry
from fieldtrust.cli.main import app
from tests.support.app_db import app_connect

KEK = bytes(range(32))
ACTOR = admin_principal().model_copy(update={"id": "cli:test"})
HEADER = ",".join(farm_import.COLUMNS)  # farm_id,farm_name,farmer_id,...,area_ha,crop: the documented order
ROWS = [
    "F1,王家农场,FR1,王芳,+86 138-0013-8000,110101199003071234,石桥村,owned,30.5,114.3,1.5,rice",
    ",Nameless farm,,,,,,,,,,",
    "F3,Farm three,,,,,,,,,abc,maize",
    "F4,Farm four,,,,,,,,,,kiwi",
    "F1,Again,,,,,,,,,,",
    "F5,Second farm of FR1,FR1,,,,,leased,,,2,sorghum",
    "F6,Farm six,,,,,,rented,,,,",
    ",,,,,,,,,,,",
    "F7,Farm seven,,,,,,,-0.1,,,",
    "F8,Farm eight,FR1,Wang Fang,,,,,,,,",
    "F9,Farm nine,FR9,,,,,,,,,",
]
EXPECTED_ERRORS = [
    "row 3, column farm_id: required",
    "row 4, column area_ha: Input should be a valid number, unable to parse string as a number",
    "row 5, column crop: unknown crop 'kiwi'",
    "row 6, column farm_id: farm 'F1' is on row 2 already",
    "row 8, column tenure: Input should be 'owned', 'leased' or 'communal'",
    "row 10, column longitude: latitude and longitude go together",
    "row 11, column farmer_name: farmer 'FR1' is given as '王芳' on row 2",
    "row 12, column farmer_id: farmer 'FR9' is not registered: give farmer_name to register them",
]


def csv_bytes(rows: list[str], *, bom: bool = True) -> bytes:
    return (b"\xef\xbb\xbf" if bom else b"") + "\r\n".join([HEADER, *rows]).encode() + b"\r\n"


@pytest.fixture
def tenant(fresh_db: str) -> str:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        registry.register_tenant(conn, "coop-a", "Cooperative A")
        registry.register_tenant(conn, "coop-b", "Cooperative B")
        registry.register_farm(conn, "coop-b", "B1", "B's farm")
    return "coop-a"


def run_import(owner_url: str, data: bytes, **options: object) -> farm_import.ImportReport:
    with app_connect(owner_url, tenant="coop-a") as conn:
        report = farm_import.import_farms(conn, "coop-a", data, actor=ACTOR, kek=KEK, **options)  # type: ignore[arg-type]
        conn.commit()
    return report


def audit_actions(owner_url: str) -> list[str]:
    with psycopg.connect(owner_url) as conn:
        return [r[0] for r in conn.execute("SELECT action FROM ft.audit_log WHERE tenant_id = 'coop-a' ORDER BY id")]


def test_bad_rows_are_reported_by_row_and_column_and_good_rows_imported(fresh_db: str, tenant: str) -> None:
    report = run_import(fresh_db, csv_bytes(ROWS))
    assert [str(e) for e in report.errors] == EXPECTED_ERRORS
    assert (report.rows, report.created, report.updated, report.unchanged, report.farmers_created) == (10, 2, 0, 0, 1)
    assert report.summary() == "10 rows: 2 farms created, 0 updated, 0 unchanged (1 new farmers); 8 rows failed"
    with app_connect(fresh_db, tenant="coop-a") as conn:
        farms = {f.id: f for f in registry.list_farms(conn, "coop-a")}
        assert sorted(farms) == ["F1", "F5"]
        assert (farms["F1"].name, farms["F1"].village, farms["F1"].tenure, farms["F1"].crop) == (
            "王家农场", "石桥村", "owned", "rice")
        assert (farms["F5"].farmer_id, farms["F5"].area_ha, farms["F5"].latitude) == ("FR1", 2.0, None)
        farmer = farmers.get_farmer(conn, "coop-a", "FR1")
        assert (farmer.name, farmer.phone, farmer.village, farmer.has_national_id) == (
            "王芳", "+8613800138000", "石桥村", True)
        stored = conn.execute("SELECT national_id_hash FROM ft.farmers WHERE id = 'FR1'").fetchone()
        assert stored is not None and b"110101199003071234" not in bytes(stored[0])
        assert stored[0] == farmers.national_id_hash(KEK, "coop-a", "110101-19900307-1234")  # found by its id
    assert audit_actions(fresh_db) == ["farmer.created", "farm.created", "farm.created"]

    again = run_import(fresh_db, csv_bytes(ROWS, bom=False))  # the same file, saved without a byte order mark
    assert [str(e) for e in again.errors] == EXPECTED_ERRORS
    assert (again.created, again.updated, again.unchanged, again.farmers_created) == (0, 0, 2, 0)
    assert audit_actions(fresh_db) == ["farmer.created", "farm.created", "farm.created"]  # nothing changed

    changed = [ROWS[0].replace(",owned,", ",communal,"), ROWS[5].replace(",2,sorghum", ",,sorghum")]
    report = run_import(fresh_db, csv_bytes(changed))
    assert (report.errors, report.created, report.updated, report.unchanged) == ([], 0, 2, 0)
    with app_connect(fresh_db, tenant="coop-a") as conn:
        assert registry.get_farm(conn, "coop-a", "F1").tenure == "communal"
        assert registry.get_farm(conn, "coop-a", "F5").area_ha is None  # an empty cell clears
    assert audit_actions(fresh_db)[-2:] == ["farm.updated", "farm.updated"]


def test_all_or_nothing_imports_nothing_when_a_row_fails(fresh_db: str, tenant: str) -> None:
    report = run_import(fresh_db, csv_bytes(ROWS), all_or_nothing=True)
    assert not report.committed and len(report.errors) == len(EXPECTED_ERRORS)
    assert report.summary().endswith("; nothing imported (all or nothing)")
    with app_connect(fresh_db, tenant="coop-a") as conn:
        assert registry.list_farms(conn, "coop-a") == []
        assert conn.execute("SELECT count(*) FROM ft.farmers").fetchone() == (0,)
    assert audit_actions(fresh_db) == []
    assert run_import(fresh_db, csv_bytes(ROWS[:1]), all_or_nothing=True).created == 1


def test_another_tenants_farm_id_is_refused_not_overwritten(fresh_db: str, tenant: str) -> None:
    report = run_import(fresh_db, csv_bytes(["B1,Taken,,,,,,,,,,", "A2,Mine,,,,,,,,,,"]))
    assert [(e.row, e.column) for e in report.errors] == [(2, "farm_id")]
    assert "already exists" in report.errors[0].message
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT tenant_id, name FROM ft.farms WHERE id = 'B1'").fetchone() == ("coop-b", "B's farm")
        assert conn.execute("SELECT tenant_id FROM ft.farms WHERE id = 'A2'").fetchone() == ("coop-a",)


UNREADABLE = [
    (HEADER.encode() + b"\nF1,Caf\xe9,,,,,,,,,,\n", "row 2: not UTF-8 (byte 0xe9); save the file as CSV UTF-8"),
    (b"farm_id,name\nF1,x\n", "row 1: columns missing farm_name; unknown name (known: farm_id, farm_name, farmer_id,"),
    (b"farm_id,farm_name,crop,Crop\n", "row 1: columns named twice: crop"),
    (b"", "row 1: the file is empty"),
]


def test_a_file_that_cannot_be_read_is_refused_whole(fresh_db: str, tenant: str) -> None:
    for data, message in UNREADABLE:
        with pytest.raises(ValueError) as refused:
            run_import(fresh_db, data)
        assert str(refused.value).startswith(message)
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM ft.farms WHERE tenant_id = 'coop-a'").fetchone() == (0,)


def test_fieldtrust_cloud_import_farms_reports_and_exits_1_on_bad_rows(fresh_db: str, tenant: str, tmp_path) -> None:
    bad, good = tmp_path / "bad.csv", tmp_path / "good.csv"
    bad.write_bytes(csv_bytes(ROWS))
    good.write_bytes(csv_bytes(ROWS[:1]))
    env = {"FIELDTRUST_DATABASE_URL": fresh_db, "FIELDTRUST_KEK": KEK.hex()}
    runner = CliRunner()
    result = runner.invoke(app, ["cloud", "import-farms", "--tenant", "coop-a", str(bad)], env=env)
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == EXPECTED_ERRORS
    assert result.stdout.strip().endswith("8 rows failed")
    result = runner.invoke(app, ["cloud", "import-farms", "--tenant", "coop-a", str(good)], env=env)
    assert result.exit_code == 0, result.output
    assert "0 farms created, 0 updated, 1 unchanged" in result.stdout
    with psycopg.connect(fresh_db) as conn:
        actor = conn.execute("SELECT DISTINCT actor_kind, actor_id FROM ft.audit_log WHERE tenant_id = 'coop-a'")
        assert [(kind, who.startswith("cli:")) for kind, who in actor] == [("platform_admin", True)]
