"""Settings of the cloud processes (ingest worker, API, CLI): one pydantic-settings class.

Everything comes from the environment (prefix ``FIELDTRUST_``) or a ``.env`` file; nothing
secret has a default outside development.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CloudSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIELDTRUST_", env_file=".env", extra="ignore")

    #: PostgreSQL (or TimescaleDB) DSN of the schema's OWNER, e.g. postgresql://fieldtrust@127.0.0.1:5432/fieldtrust:
    #: migrations and the store's upkeep (partitions, retention, rollups) run with it
    database_url: str = "postgresql://postgres@127.0.0.1:5432/fieldtrust"
    #: DSN of the services' login (role ft_app, under row-level security): FIELDTRUST_APP_DATABASE_URL; by default
    #: database_url with the user replaced by ft_app (and no password): read it as :attr:`app_database_url`
    app_database_url_setting: str | None = Field(
        default=None, validation_alias=AliasChoices("FIELDTRUST_APP_DATABASE_URL", "app_database_url"))
    #: broker URL: mqtt://user:password@host:port (mqtts:// for TLS); ``?protocol=3.1.1`` for MQTT 3.1.1
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    #: key-encryption key for device and gateway keys: 64 hex characters, or a file holding them
    kek: SecretStr | None = None
    kek_file: Path | None = None
    #: bearer token for the registration endpoints until accounts exist
    admin_token: SecretStr | None = None
    #: development mode allows a fixed, well-known KEK and admin token (never in production)
    dev_mode: bool = False

    # ingest
    ingest_group: str = "ingest"
    ingest_client_id: str | None = None
    ingest_batch_rows: int = Field(default=20_000, ge=1, le=1_000_000)  # bench/ingest.py
    ingest_batch_wait_s: float = Field(default=0.2, ge=0.0, le=60)
    #: readings with a time this far from now are dead-lettered (clock far off or garbage)
    ingest_max_past_days: int = Field(default=366 * 2, ge=1)
    ingest_max_future_s: int = Field(default=600, ge=0)
    #: count each tenant's usage (messages, bytes, readings, devices) in the ingest's commit transaction
    #: (cloud.metering.ingest); false only to measure what it costs (bench/metering_ab.py): billing needs it
    metering: bool = True

    # storage
    retention_days: int = Field(default=3650, ge=1)
    #: rollups are kept longer than raw rows by default: hourly as long as raw, daily for ever
    rollup_hourly_retention_days: int | None = Field(default=None, ge=1)
    rollup_daily_retention_days: int | None = Field(default=None, ge=1)
    partitions_ahead_days: int = Field(default=7, ge=1, le=90)

    @model_validator(mode="after")
    def _secrets(self) -> CloudSettings:
        if self.kek is not None and self.kek_file is not None:
            raise ValueError("FIELDTRUST_KEK and FIELDTRUST_KEK_FILE: give one, not both")
        return self

    @property
    def app_database_url(self) -> str:
        """Where the services (API, ingest, downlink) connect: as ft_app, never as the owner (see
        cloud.store.tenancy).  FIELDTRUST_APP_DATABASE_URL, else :attr:`database_url` as user ft_app."""
        if self.app_database_url_setting:
            return self.app_database_url_setting
        return app_url(self.database_url)

    def kek_bytes(self) -> bytes:
        """The key-encryption key (32 bytes).  Raises ValueError with the setting's name."""
        if self.kek is not None:
            text = self.kek.get_secret_value()
        elif self.kek_file is not None:
            try:
                text = self.kek_file.read_text()
            except OSError as exc:
                raise ValueError(f"FIELDTRUST_KEK_FILE: cannot read {self.kek_file}: {exc}") from None
        elif self.dev_mode:
            text = "00" * 32
        else:
            raise ValueError("FIELDTRUST_KEK or FIELDTRUST_KEK_FILE: required (64 hex characters)")
        try:
            key = bytes.fromhex(text.strip())
        except ValueError:
            raise ValueError("FIELDTRUST_KEK: not hexadecimal") from None
        if len(key) != 32:
            raise ValueError(f"FIELDTRUST_KEK: must be 32 bytes (64 hex characters), got {len(key)}")
        return key


#: the login role of the services (created by migration 040; cloud.store.tenancy grants it its privileges)
APP_ROLE = "ft_app"


def app_url(owner_url: str) -> str:
    """``owner_url`` (a URI or key=value DSN) with the user replaced by ft_app and the owner's password removed."""
    try:
        params = conninfo_to_dict(owner_url)
    except psycopg.ProgrammingError as exc:  # the DSN itself is malformed
        raise ValueError(f"FIELDTRUST_DATABASE_URL: not a PostgreSQL DSN: {exc}") from None
    params.pop("password", None)
    params["user"] = APP_ROLE
    return make_conninfo("", **params)
