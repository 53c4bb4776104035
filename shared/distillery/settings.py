"""Service settings from the environment (prefix ``DISTILLERY_``, plus ``KAFKA_BOOTSTRAP_SERVERS``).

Invalid settings stop a service at startup with a message naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from distillery.topics import Topics


class ConfigError(Exception):
    """A setting, spec or input is invalid; the message names the field."""


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILLERY_", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "DISTILLERY_KAFKA_BOOTSTRAP_SERVERS"),
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    topic_prefix: str = Field(default="distill", pattern=r"^[A-Za-z0-9._-]+$")
    spec_path: Path = Path("examples/spec.yaml")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    batch_max_records: int = Field(default=500, ge=1)
    batch_timeout_ms: int = Field(default=200, ge=1)
    max_task_bytes: int = Field(default=1024 * 1024, ge=1024)
    consumer_group: str = Field(default="", description="empty: distillery-<service>")
    run_dir: Path = Path(".distillery/run")
    log_level: str = "INFO"
    torch_threads: int = Field(default=0, ge=0, description="0 keeps torch's default")

    def group(self, service: str) -> str:
        return self.consumer_group or f"distillery-{service}"

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)


def load_settings(cls: type[ServiceSettings], **overrides: object) -> ServiceSettings:
    """Build settings or raise :class:`ConfigError` naming the bad field and its env variable."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "?"
        raise ConfigError(
            f"invalid setting {field} (env DISTILLERY_{field.upper()}): {first['msg']}"
        ) from None
