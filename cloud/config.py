"""Settings of the cloud processes (ingest worker, API, CLI): one pydantic-settings class.

Everything comes from the environment (prefix ``FIELDTRUST_``) or a ``.env`` file; nothing
secret has a default outside development.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CloudSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIELDTRUST_", env_file=".env", extra="ignore")

    #: PostgreSQL (or TimescaleDB) DSN, e.g. postgresql://fieldtrust@127.0.0.1:5432/fieldtrust
    database_url: str = "postgresql://postgres@127.0.0.1:5432/fieldtrust"
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
