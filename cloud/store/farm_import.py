"""Import farms (and their farmers) from a CSV file, with a row-by-row error report.

The file is UTF-8, with or without a byte order mark (what spreadsheets save as "CSV UTF-8"); names in
any script are kept as written.  The first row names the columns (any order, case and surrounding
spaces ignored):

=============  ========  =======================================================================
column         required  meaning
=============  ========  =======================================================================
farm_id        yes       the farm's id (1-64 of A-Z a-z 0-9 - _ .); a farm of the tenant with this
                         id is updated, so importing the same file twice changes nothing
farm_name      yes       the farm's name
farmer_id      no        the farmer who works it (registered when new: farmer_name is then needed)
farmer_name    no        the farmer's name
farmer_phone   no        the farmer's phone (digits, optionally after +; spaces and hyphens ignored)
national_id    no        the farmer's national id (kept only as a keyed hash; needs the KEK)
village        no        the farm's village (and a new farmer's)
tenure         no        owned, leased or communal
latitude       no        decimal degrees, -90 to 90 (with longitude)
longitude      no        decimal degrees, -180 to 180
area_ha        no        hectares, 0 or more
crop           no        a crop name of the registry (cloud.store.fields.CROPS)
=============  ========  =======================================================================

An empty cell clears an optional value of the farm; a column that is absent leaves it as it is.  Empty
farmer cells leave the farmer's record as it is (a farmer with several farms is described once, on any
of their rows; two rows that describe one farmer differently are refused).  Rows are numbered as
a spreadsheet shows them (the header is row 1).  Each row is checked on its own (a bad number, an unknown
crop, a missing id, an id twice in the file: the later row is refused) and every error names its row and
column.  Valid rows are imported in one transaction, each row all or nothing; with ``all_or_nothing`` a
single error imports nothing.  Every change is audited like the same change made through the API.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cloud.auth.principal import Principal
from cloud.store import farmers, fields, registry

REQUIRED = ("farm_id", "farm_name")
COLUMNS = (*REQUIRED, "farmer_id", "farmer_name", "farmer_phone", "national_id", "village", "tenure", "latitude",
           "longitude", "area_ha", "crop")
#: file columns -> the farm's fields
_FARM_COLUMNS = {"farm_name": "name", "village": "village", "tenure": "tenure", "latitude": "latitude",
                 "longitude": "longitude", "area_ha": "area_ha", "crop": "crop", "farmer_id": "farmer_id"}
_FARMER_COLUMNS = {"farmer_name": "name", "farmer_phone": "phone", "national_id": "national_id"}
_IDENT = r"^[A-Za-z0-9_.-]{1,64}$"


class FarmRow(BaseModel):
    """One row, checked (empty cells are None)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    farm_id: str = Field(pattern=_IDENT)
    farm_name: str = Field(min_length=1, max_length=200)
    farmer_id: str | None = Field(default=None, pattern=_IDENT)
    farmer_name: str | None = Field(default=None, max_length=200)
    farmer_phone: str | None = None
    national_id: str | None = None
    village: str | None = Field(default=None, max_length=200)
    tenure: Literal["owned", "leased", "communal"] | None = None
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    area_ha: float | None = Field(default=None, ge=0)
    crop: str | None = None

    @field_validator("crop")
    @classmethod
    def _known_crop(cls, value: str | None) -> str | None:
        if value is not None and value not in fields.CROPS:
            raise ValueError(f"unknown crop {value!r}")
        return value

    @field_validator("farmer_phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        try:
            return farmers.normalise_phone(value) if value is not None else None
        except registry.Invalid as exc:
            raise ValueError(str(exc).removeprefix("phone: ")) from None


@dataclass(frozen=True)
class RowError:
    row: int
    column: str | None
    message: str

    def __str__(self) -> str:
        return f"row {self.row}" + (f", column {self.column}" if self.column else "") + f": {self.message}"


@dataclass
class ImportReport:
    rows: int = 0  # data rows read (blank rows not counted)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    farmers_created: int = 0
    errors: list[RowError] = field(default_factory=list)
    committed: bool = True  # False: --all-or-nothing refused the whole file

    @property
    def failed_rows(self) -> int:
        return len({e.row for e in self.errors})

    def summary(self) -> str:
        text = (f"{self.rows} rows: {self.created} farms created, {self.updated} updated, {self.unchanged} unchanged"
                f" ({self.farmers_created} new farmers); {self.failed_rows} rows failed")
        return text + ("; nothing imported (all or nothing)" if not self.committed else "")


class _Rollback(Exception):
    """Undo the whole import (all or nothing, and an error was found)."""


def decode(data: bytes) -> str:
    """The file's text (UTF-8, a byte order mark dropped); ValueError naming the row of a byte that is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        row = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"row {row}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as CSV UTF-8") from None


def import_farms(conn: psycopg.Connection, tenant: str, data: bytes, *, actor: Principal, kek: bytes | None,
                 all_or_nothing: bool = False) -> ImportReport:
    """Check and import ``data`` (a CSV file's bytes) into ``tenant``; the report of what was done.

    ValueError (nothing imported) when the file as a whole cannot be read: not UTF-8, no header, a required
    column missing or an unknown column."""
    reader = csv.reader(io.StringIO(decode(data), newline=""))
    header = [name.strip().lower() for name in next(reader, [])]
    if not any(header):
        raise ValueError("row 1: the file is empty; the first row must name the columns")
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    twice = sorted({c for c in header if header.count(c) > 1})
    if missing or unknown or twice:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(unknown)} (known: {', '.join(COLUMNS)})"] if unknown else []) + (
            [f"named twice: {', '.join(twice)}"] if twice else [])
        raise ValueError(f"row 1: columns {'; '.join(problems)}")
    report = ImportReport()
    registry.get_tenant(conn, tenant)
    try:
        with conn.transaction():
            _import_rows(conn, tenant, header, reader, report, actor, kek)
            if all_or_nothing and report.errors:
                raise _Rollback
    except _Rollback:
        report.committed = False
    return report


def _import_rows(conn: psycopg.Connection, tenant: str, header: list[str], reader: Any, report: ImportReport,
                 actor: Principal, kek: bytes | None) -> None:
    seen_farms: dict[str, int] = {}
    seen_farmers: dict[str, tuple[int, dict[str, object]]] = {}
    for number, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        report.rows += 1
        if len(cells) != len(header):
            report.errors.append(RowError(number, None, f"{len(cells)} cells; the header has {len(header)}"))
            continue
        raw = {name: cell.strip() for name, cell in zip(header, cells, strict=True) if cell.strip()}
        try:
            row = FarmRow.model_validate(raw)
        except ValidationError as exc:
            report.errors.extend(RowError(number, str(e["loc"][0]), _message(e)) for e in exc.errors())
            continue
        given = set(header)
        errors = _cross_row_errors(number, row, given, seen_farms, seen_farmers)
        if errors:
            report.errors.extend(errors)
            continue
        _import_row(conn, tenant, number, row, given, report, actor, kek)


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    if error["type"] == "missing":
        return "required"
    return str(error["msg"])


def _cross_row_errors(number: int, row: FarmRow, given: set[str], seen_farms: dict[str, int],
                      seen_farmers: dict[str, tuple[int, dict[str, object]]]) -> list[RowError]:
    """An id twice in the file; a farmer described differently by two rows."""
    if row.farm_id in seen_farms:
        return [RowError(number, "farm_id", f"farm {row.farm_id!r} is on row {seen_farms[row.farm_id]} already")]
    if (row.latitude is None) != (row.longitude is None):
        return [RowError(number, "longitude" if row.longitude is None else "latitude",
                         "latitude and longitude go together")]
    errors = []
    if row.farmer_id is not None:
        described = {c: getattr(row, c) for c in _FARMER_COLUMNS if c in given and getattr(row, c) is not None}
        if row.farmer_id in seen_farmers:
            first, before = seen_farmers[row.farmer_id]
            errors = [RowError(number, c, f"farmer {row.farmer_id!r} is given as {before[c]!r} on row {first}")
                      for c, value in described.items() if c in before and before[c] != value]
        else:
            seen_farmers[row.farmer_id] = (number, described)
    elif any(getattr(row, c) is not None for c in _FARMER_COLUMNS):
        errors = [RowError(number, "farmer_id", "required when a farmer's name, phone or national id is given")]
    if not errors:
        seen_farms[row.farm_id] = number
    return errors


def _import_row(conn: psycopg.Connection, tenant: str, number: int, row: FarmRow, given: set[str],
                report: ImportReport, actor: Principal, kek: bytes | None) -> None:
    """One row in a savepoint: its farmer, then its farm; an error undoes the row and is reported."""
    column, new_farmer = "farmer_id", False
    try:
        with conn.transaction():
            if row.farmer_id is not None:
                new_farmer = _import_farmer(conn, tenant, row, given, actor, kek)
            column = "farm_id"
            farm = {name: getattr(row, c) for c, name in _FARM_COLUMNS.items() if c in given}
            outcome = registry.upsert_farm(conn, tenant, row.farm_id, farm, actor=actor)
    except (registry.RegistryError, ValueError) as exc:
        if column == "farmer_id" and "national" in str(exc):
            column = "national_id"
        report.errors.append(RowError(number, column, str(exc)))
        return
    report.farmers_created += new_farmer
    report.created += outcome == "created"
    report.updated += outcome == "updated"
    report.unchanged += outcome == "unchanged"


def _import_farmer(conn: psycopg.Connection, tenant: str, row: FarmRow, given: set[str], actor: Principal,
                   kek: bytes | None) -> bool:
    """Register the row's farmer, or update what the row says of a known one; whether the farmer is new."""
    assert row.farmer_id is not None
    values: dict[str, object] = {name: getattr(row, c) for c, name in _FARMER_COLUMNS.items()
                                 if getattr(row, c) is not None}
    known = conn.execute("SELECT 1 FROM ft.farmers WHERE tenant_id = %s AND id = %s",
                         (tenant, row.farmer_id)).fetchone() is not None
    if not known:
        if row.farmer_name is None:
            raise registry.NotFound(f"farmer {row.farmer_id!r} is not registered: give farmer_name to register them")
        if row.village is not None:
            values["village"] = row.village  # a new farmer lives where the farm is, unless told otherwise later
    if values:
        farmers.upsert_farmer(conn, tenant, row.farmer_id, values, actor=actor, kek=kek)
    return not known
