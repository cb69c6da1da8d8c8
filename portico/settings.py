"""Runtime settings, read from PORTICO_* environment variables and a .env file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PORTICO_", env_file=".env", extra="ignore")

    env: Literal["development", "production"] = "development"
    var_dir: Path = Path("var")
    database_url: str | None = None
    public_url: str | None = None  # default: http://{host}:{port}
    portal_url: str | None = None
    secret_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # The reverse proxies whose X-Forwarded-For / X-Forwarded-Proto `portico serve` trusts:
    # uvicorn's forwarded_allow_ips, comma-separated IPs or CIDRs ("*": any peer). None keeps
    # uvicorn's default ($FORWARDED_ALLOW_IPS, else 127.0.0.1 and ::1). The client address
    # is what the per-address sign-in budget counts.
    forwarded_allow_ips: str | None = None
    # A proxy that names the client in a header of its own (X-Real-IP, CF-Connecting-IP):
    # that header's address is the client's. Set it only when every request comes through
    # that proxy, since a client reaching Portico directly could write the header itself.
    client_address_header: str | None = None
    # How long `portico serve` keeps an idle HTTP connection open (uvicorn's
    # timeout_keep_alive, 5 s by default): longer than a proxy's idle timeout (nginx and cloud
    # balancers: 60 s), so the proxy closes first and never reuses a connection the server is
    # closing at that moment (bench.load saw such requests lost with uvicorn's 5 s).
    keep_alive_seconds: int = Field(default=65, gt=0)

    # Rate limits (portico/rate_limit.py): a token bucket per client address for requests
    # without a live session, and one per session for signed-in requests, shared through
    # Redis when PORTICO_REDIS_URL is set. On in production unless set.
    rate_limit: bool | None = None
    rate_limit_anonymous_per_second: float = Field(default=2, ge=0.001)
    rate_limit_anonymous_burst: int = Field(default=20, gt=0)
    rate_limit_session_per_second: float = Field(default=10, ge=0.001)
    rate_limit_session_burst: int = Field(default=100, gt=0)

    # Browser origins (scheme://host[:port]) whose pages may call the API and open its
    # WebSocket, with credentials; development also allows every http://localhost:* and
    # http://127.0.0.1:* origin (portico/cors.py).
    cors_origins: list[str] = []

    # Automatic persisted queries (Apollo's protocol): "auto" registers a document sent with
    # its hash, "off" answers PERSISTED_QUERY_NOT_SUPPORTED, "allowlist" runs only the
    # documents of the manifest below (Apollo's persisted-query-manifest JSON). The store is
    # a cache of at most the bytes below: this process's memory, or Redis with
    # PORTICO_REDIS_URL.
    persisted_queries: Literal["auto", "off", "allowlist"] = "auto"
    persisted_queries_manifest: Path | None = None
    persisted_queries_cache_bytes: int = Field(default=16 * 1024 * 1024, gt=0)

    graphiql: bool | None = None
    introspection: bool | None = None

    session_ttl_hours: int = Field(default=24 * 14, gt=0)
    invitation_ttl_hours: int = Field(default=168, gt=0)
    password_link_ttl_hours: int = Field(default=72, gt=0)

    redis_url: str | None = None  # set: events fan out through Redis to every process
    # /metrics: behind `Authorization: Bearer <token>` when set; open in development and off
    # (404) in production without it.
    metrics_token: str | None = None
    smtp_url: str | None = None
    mail_from: str = "Portico <no-reply@localhost>"
    # Retries of outgoing mail (services/loops/delivery.py): a doubling wait from the base up
    # to the max (±20 % jitter); the defaults keep trying for 4 to 5 days, as RFC 5321 asks.
    mail_retry_base_seconds: float = Field(default=30, gt=0)
    mail_retry_max_seconds: float = Field(default=4 * 3600, gt=0)
    mail_max_attempts: int = Field(default=39, gt=0)
    mail_lease_seconds: float = Field(default=300, gt=0)
    # Sends in flight at once per worker (and connections kept open per SMTP server).
    mail_send_concurrency: int = Field(default=8, gt=0, le=100)
    # Mail hosts on loopback, private or link-local networks: refused in production unless
    # allowed (an on-premises mail server).
    allow_private_mail_hosts: bool | None = None
    inprocess_worker: bool = True
    worker_poll_seconds: float = Field(default=2, gt=0)
    # Mailbox sync (services/loops/mail_sync.py): a pass at least this often, IMAP IDLE in between
    # where the server has it, and after a failed pass a doubling wait (with jitter) up to the max.
    sync_interval_seconds: float = Field(default=60, gt=0)
    sync_idle: bool = True
    sync_retry_base_seconds: float = Field(default=5, gt=0)
    sync_retry_max_seconds: float = Field(default=900, gt=0)
    # Hostile and broken mail (services/mail/sync_engine.py, services/mail/store.py): a message
    # larger than this is never read whole (headers kept, body and attachments skipped); one
    # that fails this often is skipped for sync_skip_retry_hours.
    sync_max_message_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    sync_max_failures: int = Field(default=3, gt=0)
    sync_skip_retry_hours: float = Field(default=24, gt=0)
    # Auto-save trusts a sender only as the firm's receiving server vouched: the topmost
    # Authentication-Results header of this authserv-id is read (none set: the topmost
    # header, which the last server to receive the mail added); dmarc=fail refuses auto-save,
    # and with mail_auth_strict only dmarc=pass allows it.
    mail_auth_serv_id: str | None = None
    mail_auth_strict: bool = False
    signin_max_failures: int = Field(default=5, gt=0)
    signin_lockout_seconds: int = Field(default=900, gt=0)
    # Failed sign-ins from one client address (any firm, any email) within the lockout window.
    signin_max_failures_per_address: int = Field(default=30, gt=0)

    max_body_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    max_query_depth: int = 10
    max_aliases: int = 30
    max_tokens: int = 2000
    # The work budget, checked before execution: fields once fragments are expanded, and the
    # answer's estimated size (page sizes multiplied down the selection).
    max_query_fields: int = Field(default=2000, gt=0)
    max_result_size: int = Field(default=100_000, gt=0)
    max_page_size: int = 100
    max_import_rows: int = 10_000

    files_dir: Path | None = None  # default: {var_dir}/files
    # Where file contents go: the files folder above, or the database (PostgreSQL: every
    # host reads the same files, no shared disk). `portico files move` carries them over.
    file_store: Literal["folder", "database"] = "folder"
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    upload_types: list[str] = [
        "application/pdf",
        "image/png",
        "image/jpeg",
        "image/gif",
        "text/plain",
        "text/csv",
        "application/zip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/msword",
        "application/vnd.ms-excel",
    ]

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def resolved_portal_url(self) -> str:
        return (self.portal_url or self.resolved_public_url).rstrip("/")

    @property
    def resolved_files_dir(self) -> Path:
        return self.files_dir or self.var_dir / "files"

    @property
    def outbox_dir(self) -> Path:
        return self.var_dir / "outbox"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite://{self.var_dir / 'portico.sqlite3'}"

    @property
    def graphiql_enabled(self) -> bool:
        return self.graphiql if self.graphiql is not None else not self.production

    @property
    def private_mail_hosts_allowed(self) -> bool:
        if self.allow_private_mail_hosts is not None:
            return self.allow_private_mail_hosts
        return not self.production

    @property
    def rate_limit_enabled(self) -> bool:
        return self.rate_limit if self.rate_limit is not None else self.production

    @property
    def introspection_enabled(self) -> bool:
        return self.introspection if self.introspection is not None else not self.production
