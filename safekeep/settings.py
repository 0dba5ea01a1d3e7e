"""The one settings class. Every knob is an env var prefixed ``SAFEKEEP_``.

The defaults are the embedded column of DESIGN.md (SQLite, local folder, FTS5, an
in-process worker, the Graph simulator); every scale-out part is chosen by setting a URL.
"""

from __future__ import annotations

import base64
import enum
from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A fixed development master key: convenient for `make run`, refused in production.
DEV_MASTER_KEY = base64.urlsafe_b64encode(b"safekeep-development-master-key!").decode()
DEV_APP_CLIENT_ID = "00000000-0000-4000-8000-5afe4ee90001"
DEV_APP_CLIENT_SECRET = "safekeep-dev-app-secret"  # noqa: S105 - refused in production

# A metrics token is guessed by nobody: 32 is what `openssl rand -hex 16` prints.
METRICS_TOKEN_MIN_CHARS = 32

MICROSOFT_LOGIN_URL = "https://login.microsoftonline.com"
MICROSOFT_GRAPH_URL = "https://graph.microsoft.com"


class Environment(enum.StrEnum):
    development = "development"
    production = "production"


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error must never print a value it refused (a
    # mistyped master key, a database URL with its password) into logs or a terminal.
    model_config = SettingsConfigDict(
        env_prefix="SAFEKEEP_", extra="ignore", hide_input_in_errors=True
    )

    env: Environment = Environment.development
    data_dir: Path = Path("./data")

    # Where state lives. Empty means "embedded default inside data_dir".
    database_url: str = ""
    broker_url: str = ""
    blobstore_url: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    search_url: str = ""
    search_index_prefix: str = "safekeep"
    # OpenSearch: make each index write wait until it is searchable (tests, small deployments);
    # off, a backup's items become searchable within the index refresh interval (1 s).
    search_wait_for_refresh: bool = False
    redis_url: str = ""  # shared limiter/locks; defaults to broker_url when that is redis://

    # Microsoft (or graphsim).
    login_url: str = MICROSOFT_LOGIN_URL
    graph_url: str = MICROSOFT_GRAPH_URL
    ca_bundle: Path | None = None
    app_client_id: str = DEV_APP_CLIENT_ID
    app_client_secret: SecretStr = SecretStr(DEV_APP_CLIENT_SECRET)
    public_url: str = "http://127.0.0.1:8000"
    # Where Microsoft Graph posts change notifications (``{base}/v1/graph/notifications``);
    # empty: public_url. Graph calls us, so the webhook SSRF rules do not apply, but Graph
    # only calls https: production refuses anything else.
    notification_base_url: str = ""
    # Notifications for one account and service within this window cost one incremental.
    notification_debounce_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # Ransomware and mass-deletion detection: a run raises one when its suspicious files
    # (deletions) reach the account's own mean plus this many standard deviations, and at
    # least these floors.
    detection_min_files: Annotated[int, Field(ge=1)] = 10
    detection_min_deletions: Annotated[int, Field(ge=1)] = 50
    detection_sigmas: Annotated[float, Field(gt=0)] = 4.0

    # Secrets.
    master_key: SecretStr = SecretStr(DEV_MASTER_KEY)
    # Master keys being rotated away from, comma-separated: what they wrapped still opens until
    # `safekeep keys rotate` has re-wrapped it under master_key (docs/operations.md).
    previous_master_keys: SecretStr = SecretStr("")

    # Billing (off when no API key).
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None

    # The bearer token Prometheus presents to an API process's /metrics: what that shows (every
    # MSP's jobs and tenants counted together, each route's traffic) is the operator's, and the
    # API's port is the internet's. Unset: /metrics answers anyone in development and no one
    # in production.
    metrics_token: SecretStr | None = None

    # Behaviour.
    scheduler_interval_seconds: Annotated[float, Field(gt=0)] = 60.0
    # A backup task or a single-step job (restore, export, discovery, purge) whose worker
    # stopped renewing its lease for this long is taken over by another.
    task_lease_seconds: Annotated[float, Field(gt=0)] = 600.0
    # A queued or running job untouched this long lost its message: the scheduler resends it.
    job_recovery_seconds: Annotated[float, Field(gt=0)] = 1200.0
    export_ttl_hours: Annotated[int, Field(ge=1)] = 72
    # Graph has no delta for a mailbox's list of calendars: an incremental re-lists them only
    # when the stored list is older than this (and on a full pass, a resync, a calendar gone,
    # or a change notification its known calendars do not explain), so a brand-new calendar
    # with no notified event is found at most this late. 0: list them on every run.
    calendar_list_refresh_hours: Annotated[float, Field(ge=0, le=168)] = 6.0
    search_body_max_chars: Annotated[int, Field(ge=1024)] = 200_000
    # `safekeep serve` runs its worker and scheduler in a child process at this niceness
    # (added to the API's): on a small machine a backup then takes the CPU the API leaves
    # idle instead of queueing the API's requests behind it. 0: the same priority.
    serve_worker_niceness: Annotated[int, Field(ge=0, le=19)] = 10
    # Webhooks go to the public internet only; this lets them reach loopback and private
    # addresses (a receiver on the developer's machine, tests). Off in every environment.
    webhook_allow_private_targets: bool = False

    # Input bounds, enforced before a request reaches routing or authentication.
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024  # JSON request bodies
    max_query_bytes: Annotated[int, Field(ge=256)] = 8 * 1024  # 414 beyond
    max_header_bytes: Annotated[int, Field(ge=4096)] = 32 * 1024  # all header lines; 431 beyond
    # How fast one API key, and one MSP's keys together, may call one API process
    # (safekeep.api.rates): token buckets of *_burst requests refilled at
    # *_rate_per_second; beyond either, 429 with Retry-After. 0: no limit.
    api_key_rate_per_second: Annotated[float, Field(ge=0)] = 100.0
    api_key_burst: Annotated[int, Field(ge=1)] = 300
    api_msp_rate_per_second: Annotated[float, Field(ge=0)] = 200.0
    api_msp_burst: Annotated[int, Field(ge=1)] = 600
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("master_key")
    @classmethod
    def _master_key_is_32_bytes(cls, value: SecretStr) -> SecretStr:
        try:
            raw = base64.urlsafe_b64decode(value.get_secret_value().encode())
        except (ValueError, TypeError) as exc:
            raise ValueError("SAFEKEEP_MASTER_KEY must be urlsafe base64") from exc
        if len(raw) != 32:
            raise ValueError("SAFEKEEP_MASTER_KEY must decode to 32 bytes")
        return value

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_is_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < METRICS_TOKEN_MIN_CHARS:
            raise ValueError(
                f"SAFEKEEP_METRICS_TOKEN must be at least {METRICS_TOKEN_MIN_CHARS} characters"
            )
        return value

    @field_validator("previous_master_keys")
    @classmethod
    def _previous_master_keys_are_32_bytes(cls, value: SecretStr) -> SecretStr:
        for key in _split_keys(value.get_secret_value()):
            try:
                raw = base64.urlsafe_b64decode(key.encode())
            except (ValueError, TypeError) as exc:
                raise ValueError("SAFEKEEP_PREVIOUS_MASTER_KEYS must be urlsafe base64") from exc
            if len(raw) != 32:
                raise ValueError("each of SAFEKEEP_PREVIOUS_MASTER_KEYS must decode to 32 bytes")
        return value

    @model_validator(mode="after")
    def _no_development_secrets_in_production(self) -> Settings:
        if self.env is Environment.production:
            if self.master_key.get_secret_value() == DEV_MASTER_KEY:
                raise ValueError("SAFEKEEP_MASTER_KEY must be set in production")
            if self.app_client_secret.get_secret_value() == DEV_APP_CLIENT_SECRET:
                raise ValueError("SAFEKEEP_APP_CLIENT_SECRET must be set in production")
            if self.notification_base_url and not self.notification_base_url.startswith("https://"):
                raise ValueError(
                    "SAFEKEEP_NOTIFICATION_BASE_URL must be https in production: Microsoft "
                    "Graph delivers change notifications over https only"
                )
            if self.broker_url.startswith("amqp") and not self.redis_url:
                raise ValueError(
                    "SAFEKEEP_REDIS_URL must be set with a RabbitMQ broker in production: "
                    "workers share Microsoft Graph's throttling limits through Redis"
                )
        return self

    # Resolved URLs: the embedded defaults live under data_dir.

    @cached_property
    def resolved_database_url(self) -> str:
        default = f"sqlite+aiosqlite:///{(self.data_dir / 'safekeep.db').resolve()}"
        return self.database_url or default

    @property
    def resolved_notification_base_url(self) -> str:
        return (self.notification_base_url or self.public_url).rstrip("/")

    @property
    def notifications_possible(self) -> bool:
        """Graph calls https only; plain http is for graphsim outside production."""
        url = self.resolved_notification_base_url
        return url.startswith("https://") or (
            url.startswith("http://") and self.env is not Environment.production
        )

    @cached_property
    def resolved_blobstore_url(self) -> str:
        return self.blobstore_url or (self.data_dir / "blobs").resolve().as_uri()

    @cached_property
    def resolved_search_url(self) -> str:
        return self.search_url or f"sqlite:///{(self.data_dir / 'search.db').resolve()}"

    @cached_property
    def resolved_redis_url(self) -> str | None:
        if self.redis_url:
            return self.redis_url
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return None

    @property
    def master_key_bytes(self) -> bytes:
        return base64.urlsafe_b64decode(self.master_key.get_secret_value().encode())

    @property
    def master_keys(self) -> tuple[bytes, ...]:
        """The current master key first, then those being rotated away from."""
        previous = _split_keys(self.previous_master_keys.get_secret_value())
        return (self.master_key_bytes, *(base64.urlsafe_b64decode(k.encode()) for k in previous))

    @property
    def embedded_queue(self) -> bool:
        return not self.broker_url


def _split_keys(value: str) -> list[str]:
    return [key.strip() for key in value.split(",") if key.strip()]


def get_settings() -> Settings:
    """Build settings from the environment (tests call this after changing env vars)."""
    return Settings()


settings = get_settings()
