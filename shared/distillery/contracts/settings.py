"""Service settings from the environment (prefix ``DISTILLERY_``, plus ``KAFKA_BOOTSTRAP_SERVERS``).

Invalid settings stop a service at startup with a message naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from distillery.contracts.channels import Topics, group_name


class ConfigError(Exception):
    """A setting, spec or input is invalid; the message names the field."""


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILLERY_", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "DISTILLERY_KAFKA_BOOTSTRAP_SERVERS"),
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    # Secrets are SecretStr: never in a repr, a log line or an error. Each can come from a file
    # (a mounted Kubernetes or Docker secret) instead of the environment: *_file.
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_ssl_cafile: Path | None = None  # the brokers' CA (default: the system's)
    kafka_ssl_certfile: Path | None = None  # client certificate, for mutual TLS
    kafka_ssl_keyfile: Path | None = None
    topic_prefix: str = Field(default="distill", pattern=r"^[A-Za-z0-9._-]+$")
    spec_path: Path = Path("examples/spec.yaml")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    batch_max_records: int = Field(default=500, ge=1)
    batch_timeout_ms: int = Field(default=200, ge=1)
    max_task_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_event_bytes: int = Field(default=8 * 1024 * 1024, ge=1024,
                                 description="a consumed record over this is dead-lettered as oversized")
    consumer_group: str = Field(default="", description="empty: the service's group in contracts.channels.SERVICE_GROUPS")
    lag_watch_s: float = Field(default=15.0, ge=0, description="how often the lag of the groups reading this "
                               "service's outputs is measured at the broker (0: never)")
    run_dir: Path = Path(".distillery/run")
    state_dir: Path | None = Field(default=None, description="where the judge and the editor keep checkpoints "
                                   "of the state they rebuild from topics (unset: a full read at every start)")
    checkpoint_after: int = Field(default=10_000, ge=1, description="a rebuild that read this many records past "
                                  "its checkpoint writes a new one")
    log_level: str = "INFO"
    torch_threads: int = Field(default=0, ge=0, description="0 keeps torch's default")

    @model_validator(mode="after")
    def _security_is_complete(self) -> ServiceSettings:
        if self.kafka_sasl_password_file is not None:
            secret = _read_secret(self.kafka_sasl_password_file, "kafka_sasl_password_file")
            object.__setattr__(self, "kafka_sasl_password", SecretStr(secret))
        if self.kafka_security_protocol.startswith("SASL_"):
            if self.kafka_sasl_mechanism is None:
                raise ValueError(f"kafka_sasl_mechanism is required with {self.kafka_security_protocol}")
            if not self.kafka_sasl_username or self.kafka_sasl_password is None:
                raise ValueError("kafka_sasl_username and kafka_sasl_password (or kafka_sasl_password_file) are required "
                                 f"with {self.kafka_security_protocol}")
        require_files(self, "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("kafka_ssl_certfile and kafka_ssl_keyfile go together (mutual TLS)")
        return self

    def group(self, service: str, suffix: str = "", **params: str) -> str:
        """The consumer group of one of the service's subscriptions (contracts.channels.SERVICE_GROUPS)."""
        return group_name(service, suffix, self.consumer_group, **params)

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)


def require_files(settings: BaseSettings, *fields: str) -> None:
    """Each of these path settings, where set, names an existing file (certificates, keys)."""
    for name in fields:
        path = getattr(settings, name)
        if path is not None and not path.is_file():
            raise ValueError(f"{name}: file not found: {path}")


def _read_secret(path: Path, field: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"{field}: cannot read {path}: {exc.strerror}") from None


def load_settings(cls: type[ServiceSettings], **overrides: object) -> ServiceSettings:
    """Build settings or raise :class:`ConfigError` naming the bad field and its env variable."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        if not field:  # a check across fields names its fields itself
            raise ConfigError(f"invalid settings: {first['msg'].removeprefix('Value error, ')}") from None
        raise ConfigError(
            f"invalid setting {field} (env DISTILLERY_{field.upper()}): {first['msg']}"
        ) from None
