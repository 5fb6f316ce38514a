"""The server's configuration: a pydantic model read from YAML. Unknown keys and bad values
stop start-up with a message that names the key."""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListenerConfig(_Strict):
    port: int = Field(8008, ge=0, le=65535)
    bind_address: str = "127.0.0.1"
    # client: the client-server API (and /health); metrics: Prometheus /metrics (and
    # /health); federation: the server-server API and the key server (needs
    # federation.enabled). Keep metrics off the public client port: give it its own listener.
    # internal: only requests carrying worker.internal_secret (the processes of a
    # multi-process deployment forwarding to each other; never expose it).
    resources: list[Literal["client", "metrics", "federation", "internal"]] = Field(
        default_factory=lambda: ["client"], min_length=1)
    # Serve HTTPS with federation.tls_certificate_path / tls_private_key_path.
    tls: bool = False
    # Behind a reverse proxy that sets X-Forwarded-For: the client's address is its first
    # entry (rate limits by address, device IPs, the audit log). Only for a listener that
    # nobody but the proxy can reach: anyone else could claim any address.
    x_forwarded: bool = False


class DatabaseConfig(_Strict):
    dsn: str | None = None  # None: embedded PostgreSQL in <data_dir>/postgres
    max_connections: int = Field(10, ge=1, le=200)


class RegistrationConfig(_Strict):
    enabled: bool = True
    shared_secret: str | None = None
    bcrypt_rounds: int = Field(12, ge=4, le=31)
    # Lifetime of one-time m.login.token tokens (login/get_token, the ERP bridge's links).
    login_token_ttl_ms: int = Field(120_000, ge=1000)


class LimitsConfig(_Strict):
    max_request_body_bytes: int = Field(1_048_576, ge=1024)


class RoomsConfig(_Strict):
    default_room_version: Literal[
        "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"] = "12"
    # Full state snapshot every N state changes; in between only deltas are stored.
    max_state_delta_chain: int = Field(64, ge=1, le=10_000)


class UserDirectoryConfig(_Strict):
    # True: every local user is searchable; False: only users who share a room with the asker.
    search_all_users: bool = True


class PresenceConfig(_Strict):
    enabled: bool = True
    # online -> unavailable after this long without activity
    idle_after_ms: int = Field(300_000, ge=1000)
    # -> offline this long after the user's last /sync ended
    offline_after_ms: int = Field(30_000, ge=500)


class GuestAccessConfig(_Strict):
    # POST /register?kind=guest: accounts without credentials, limited to the spec's guest
    # endpoints and to rooms whose m.room.guest_access is can_join (and that have no tenant).
    enabled: bool = False


class OpenIdConfig(_Strict):
    # Lifetime of the OpenID tokens widgets get from /user/{userId}/openid/request_token.
    token_lifetime_ms: int = Field(3_600_000, ge=1000)


class ThumbnailSize(_Strict):
    width: int = Field(ge=1, le=4096)
    height: int = Field(ge=1, le=4096)
    method: Literal["crop", "scale"]


def _default_thumbnail_sizes() -> list[ThumbnailSize]:
    return [ThumbnailSize(width=w, height=h, method=m) for w, h, m in (
        (32, 32, "crop"), (96, 96, "crop"), (320, 240, "scale"), (640, 480, "scale"), (800, 600, "scale"))]


def _check_cidrs(v: list[str]) -> list[str]:
    import ipaddress
    for cidr in v:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"{cidr!r} is not an IP address or CIDR range") from None
    return v


class UrlPreviewConfig(_Strict):
    enabled: bool = False
    # CIDR ranges a preview may connect to although they are private/reserved (e.g. an intranet).
    ip_range_whitelist: list[str] = []
    max_page_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    timeout_ms: int = Field(10_000, ge=100, le=120_000)
    cache_ttl_ms: int = Field(3_600_000, ge=0)

    @field_validator("ip_range_whitelist")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return _check_cidrs(v)


class MediaConfig(_Strict):
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    # None: every content type may be uploaded; else patterns such as "image/*", "text/plain".
    allowed_content_types: list[str] | None = None
    # Serve the deprecated unauthenticated /_matrix/media/v3 download and thumbnail routes.
    legacy_unauthenticated_media: bool = True
    thumbnail_sizes: list[ThumbnailSize] = Field(default_factory=_default_thumbnail_sizes, min_length=1)
    # Images with more pixels than this are not thumbnailed (decompression bombs).
    max_image_pixels: int = Field(32_000_000, ge=1)
    # Media ids from POST /_matrix/media/v1/create: how many a user may hold unused, and for how long.
    max_pending_uploads: int = Field(5, ge=1)
    unused_expiration_ms: int = Field(86_400_000, ge=1000)
    url_preview: UrlPreviewConfig = UrlPreviewConfig()

    @field_validator("allowed_content_types")
    @classmethod
    def _patterns(cls, v: list[str] | None) -> list[str] | None:
        for pattern in v or ():
            if pattern.count("/") != 1:
                raise ValueError(f"{pattern!r} is not a content type pattern like image/* or text/plain")
        return v


class SearchConfig(_Strict):
    # PostgreSQL text search configuration for server-side search: "simple" (every word
    # as written, any language) or a language's stemming one ("english", "german", ...).
    # Changing it rebuilds the search index at the next start.
    language: str = Field("simple", pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class TrustedKeyServer(_Strict):
    """A notary asked for other servers' keys when they cannot be fetched directly."""
    server_name: str
    # key id -> unpadded base64 ed25519 public key. Empty: the notary's own keys are
    # fetched from it over TLS like any server's.
    verify_keys: dict[str, str] = {}


class OldSigningKey(_Strict):
    key: str          # unpadded base64 public key
    expired_ts: int   # ms since the epoch when it stopped being used


class FederationConfig(_Strict):
    # Off by default: a business deployment talks to other servers only when it decides to.
    # On: the "federation" listener resource serves the server-server API, and users can
    # join rooms of other servers and invite their users.
    enabled: bool = False
    # The federation listener's certificate and key (PEM). null: <data_dir>/federation.crt
    # and federation.key, a self-signed pair generated on first start.
    tls_certificate_path: Path | None = None
    tls_private_key_path: Path | None = None
    # Served at /.well-known/matrix/server as {"m.server": ...} when set ("host:port").
    well_known_server: str | None = None
    # How long our published keys may be cached by others (valid_until_ts = now + this).
    key_valid_for_ms: int = Field(86_400_000, ge=60_000)
    # Keys this server used to sign with (key id -> key and when it stopped being used).
    old_signing_keys: dict[str, OldSigningKey] = {}
    # Notaries for other servers' keys, asked when a server cannot be reached directly.
    trusted_key_servers: list[TrustedKeyServer] = []
    # Verify the TLS certificates of other servers (and of .well-known look-ups).
    verify_certificates: bool = True
    # Extra PEM certificates (a private CA, or a peer's self-signed certificate) to trust.
    trusted_certificates: list[Path] = []
    # TEST ONLY: server names whose certificates are not verified at all.
    insecure_skip_verify_hosts: list[str] = []
    # Outbound federation reaches only public addresses unless a range is listed here.
    ip_range_whitelist: list[str] = []
    # null: any server may federate; a list: only these servers (both directions).
    domain_whitelist: list[str] | None = None
    # Retries of a peer that does not answer: doubling from min to max.
    min_retry_interval_ms: int = Field(2_000, ge=10)
    max_retry_interval_ms: int = Field(600_000, ge=10)
    # Tenants whose rooms remote users may join and whose users may join remote rooms.
    # Every other tenant is closed to federation (users without a tenant are not walled).
    federated_tenants: list[str] = []

    @field_validator("ip_range_whitelist")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return _check_cidrs(v)


class ShutdownConfig(_Strict):
    # On SIGTERM: how long to wait for in-flight requests, queued writes and application-
    # service deliveries before stopping anyway.
    grace_period_ms: int = Field(10_000, ge=0, le=600_000)


class PushConfig(_Strict):
    # Deliver notifications to the push gateways of users' pushers (POST /pushers/set).
    enabled: bool = True
    # Event content in pushes (pushers with data.format event_id_only never get it).
    include_content: bool = True
    # Leave the phone quiet while the user reads along: no push for a notification when
    # the user has a /sync in flight, or ended one less than synced_within_ms ago.
    quiet_while_syncing: bool = True
    synced_within_ms: int = Field(10_000, ge=0)
    # A gateway that fails is retried after retry_initial_ms, doubling up to
    # retry_max_ms; a notification still undelivered after give_up_after_ms is dropped.
    retry_initial_ms: int = Field(1_000, ge=10)
    retry_max_ms: int = Field(3_600_000, ge=10)
    give_up_after_ms: int = Field(86_400_000, ge=0)
    request_timeout_ms: int = Field(10_000, ge=100, le=120_000)
    # The badge: the number of rooms with unread notifications (true), or the number of
    # unread notifications (false).
    group_unread_count_by_room: bool = True
    # Push gateways are reached only at public addresses unless their range is listed
    # here (e.g. a gateway in your own network: ["10.1.2.0/24"]).
    gateway_ip_range_whitelist: list[str] = []

    @field_validator("gateway_ip_range_whitelist")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return _check_cidrs(v)


class SlidingSyncConfig(_Strict):
    # Sliding sync (MSC4186) connection state lives in memory: at most this many
    # connections (least recently used dropped), each forgotten after this long unused.
    # A dropped connection's next request is answered M_UNKNOWN_POS and the client
    # starts a new one.
    max_connections: int = Field(10_000, ge=1)
    connection_ttl_seconds: int = Field(3_600, ge=1)


class RateLimit(_Strict):
    """A token bucket: `burst_count` actions at once, refilled at `per_second`."""
    per_second: float = Field(gt=0)
    burst_count: float = Field(ge=1)


def _rate(per_second: float, burst_count: float):
    return Field(default_factory=lambda: RateLimit(per_second=per_second, burst_count=burst_count))


class LoginRateLimits(_Strict):
    address: RateLimit = _rate(0.003, 5)          # login requests per client IP
    account: RateLimit = _rate(0.003, 5)          # successful logins per account
    failed_attempts: RateLimit = _rate(0.17, 3)   # wrong passwords per account


class JoinRateLimits(_Strict):
    local: RateLimit = _rate(0.1, 10)             # joins of rooms this server is in
    remote: RateLimit = _rate(0.01, 10)           # joins over federation (none yet)


class InviteRateLimits(_Strict):
    per_room: RateLimit = _rate(0.3, 10)          # invites into one room
    per_user: RateLimit = _rate(0.003, 5)         # invites received by one user
    per_issuer: RateLimit = _rate(0.3, 10)        # invites sent by one user


INSTANCE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class WorkerJobsConfig(_Strict):
    # The instance running each background job; null: the stream owner (`worker.streams`).
    appservices: str | None = None   # application-service transaction pushers
    pushers: str | None = None       # push-gateway pushers
    # The instance making media thumbnails (requests for one are forwarded to it);
    # null: whichever process is asked (all of them share <data_dir>/media).
    thumbnails: str | None = None
    # The instance keeping presence (timeouts, PUT /presence, activity); null: the stream
    # owner. Elsewhere, the stream owner serves /sync from what it announces.
    presence: str | None = None


class WorkerConfig(_Strict):
    """Several processes on one PostgreSQL (docs/scaling.md). The default, role `main`
    with no writers listed, is one process doing everything."""
    instance_name: str = Field("main", pattern=INSTANCE_NAME_PATTERN)
    # main: everything, alone. writer: builds and persists the events of its shard of
    # rooms. client: the client API, room writes forwarded to the room's writer. sync:
    # /sync (any number of them); the one named in `streams` writes the per-user streams
    # (typing, receipts, account data, to-device, device lists), the others follow them.
    role: Literal["main", "writer", "client", "sync"] = "main"
    # Every instance's internal base URL (a listener of it with the `internal` resource).
    instances: dict[str, str] = {}
    # The writers sharing the rooms, by a stable hash of the room id (rendezvous hashing:
    # adding a writer moves only the rooms it takes over).
    writers: list[str] = []
    # The one instance writing the per-user streams and owning typing and presence.
    streams: str | None = None
    jobs: WorkerJobsConfig = WorkerJobsConfig()
    # Shared by the instances: every request to an `internal` listener must carry it.
    internal_secret: str | None = None

    @model_validator(mode="after")
    def _layout(self) -> "WorkerConfig":
        if self.role == "main":
            if self.writers:
                raise ValueError("role main is the only writer: list no writers, or give each process a role")
            return self
        if not self.writers or not self.streams:
            raise ValueError(f"role {self.role} needs `writers` and `streams`")
        if not self.internal_secret or len(self.internal_secret) < 16:
            raise ValueError("several processes need an internal_secret of at least 16 characters")
        named = set(self.writers) | {self.streams, self.instance_name} | {
            j for j in self.jobs.model_dump().values() if j}
        missing = sorted(n for n in named if n not in self.instances)
        if missing:
            raise ValueError(f"instances has no internal URL for {', '.join(missing)}")
        if (self.role == "writer") != (self.instance_name in self.writers):
            raise ValueError("an instance is in `writers` exactly when its role is writer")
        if self.jobs.presence in self.writers:
            raise ValueError("jobs.presence needs every room's events: name a client or sync instance, not a writer")
        return self

    @property
    def multi_process(self) -> bool:
        return self.role != "main"

    def runs_job(self, job: str) -> bool:
        """Whether this instance runs a background job (all of them in role main)."""
        if not self.multi_process:
            return True
        return (getattr(self.jobs, job) or self.streams) == self.instance_name

    @property
    def owns_streams(self) -> bool:
        return not self.multi_process or self.streams == self.instance_name


class Config(_Strict):
    server_name: str = "localhost"
    public_baseurl: str = "http://127.0.0.1:8008/"
    data_dir: Path = Path("data")
    signing_key_path: Path | None = None  # default <data_dir>/signing.key
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # text: one human-readable line per record; json: one JSON object per line.
    log_format: Literal["text", "json"] = "text"
    listeners: list[ListenerConfig] = [ListenerConfig()]
    database: DatabaseConfig = DatabaseConfig()
    registration: RegistrationConfig = RegistrationConfig()
    limits: LimitsConfig = LimitsConfig()
    rooms: RoomsConfig = RoomsConfig()
    user_directory: UserDirectoryConfig = UserDirectoryConfig()
    presence: PresenceConfig = PresenceConfig()
    guest_access: GuestAccessConfig = GuestAccessConfig()
    openid: OpenIdConfig = OpenIdConfig()
    federation: FederationConfig = FederationConfig()
    media: MediaConfig = MediaConfig()
    search: SearchConfig = SearchConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    push: PushConfig = PushConfig()
    sliding_sync: SlidingSyncConfig = SlidingSyncConfig()
    worker: WorkerConfig = WorkerConfig()
    # Rate limits (Synapse's keys and defaults): 429 M_LIMIT_EXCEEDED with retry_after_ms.
    rc_message: RateLimit = _rate(0.2, 10)        # events sent, per user
    rc_registration: RateLimit = _rate(0.17, 3)   # registrations, per client IP
    rc_login: LoginRateLimits = LoginRateLimits()
    rc_joins: JoinRateLimits = JoinRateLimits()
    rc_invites: InviteRateLimits = InviteRateLimits()
    rc_media_create: RateLimit = _rate(10, 50)    # uploads and media ids created, per user
    # Application-service registration files (YAML), relative to this config file.
    app_service_config_files: list[Path] = []

    @field_validator("server_name")
    @classmethod
    def _server_name(cls, v: str) -> str:
        if not v or any(c in v for c in "/@!#$ ") or len(v) > 230:
            raise ValueError("must be a hostname with an optional :port")
        return v

    @model_validator(mode="after")
    def _federation_listener(self) -> "Config":
        if not self.federation.enabled and any("federation" in l.resources for l in self.listeners):
            raise ValueError("a listener serves `federation` but federation.enabled is false")
        if self.worker.multi_process and self.federation.enabled:
            raise ValueError("federation is not yet served by a multi-process deployment (docs/scaling.md)")
        if any("internal" in l.resources for l in self.listeners) and not self.worker.internal_secret:
            raise ValueError("a listener serves `internal` but worker.internal_secret is not set")
        return self

    @property
    def signing_key_file(self) -> Path:
        return self.signing_key_path or self.data_dir / "signing.key"


def lifted_rate_limits_yaml(per_second: float = 100_000, burst_count: float = 1_000_000) -> str:
    """Config text setting every rate limit out of reach, for a test server or a load
    tool driving the server far faster than people do (never the defaults)."""
    value = f"{{per_second: {per_second}, burst_count: {burst_count}}}"
    lines = []
    for name, field in Config.model_fields.items():
        if not name.startswith("rc_"):
            continue
        if field.annotation is RateLimit:
            lines.append(f"{name}: {value}")
        else:
            lines.append(f"{name}:")
            lines += [f"  {sub}: {value}" for sub in field.annotation.model_fields]
    return "\n".join(lines) + "\n"


SAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "config.sample.yaml"


class ConfigError(Exception):
    pass


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def load_config(path: Path) -> Config:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys")
    try:
        config = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"config file {path} has errors:\n{_describe(e)}") from None
    # Relative paths are relative to the config file, so `--config` works from anywhere.
    base = path.resolve().parent
    if not config.data_dir.is_absolute():
        config.data_dir = base / config.data_dir
    if config.signing_key_path and not config.signing_key_path.is_absolute():
        config.signing_key_path = base / config.signing_key_path
    config.app_service_config_files = [p if p.is_absolute() else base / p
                                       for p in config.app_service_config_files]
    fed = config.federation
    for name in ("tls_certificate_path", "tls_private_key_path"):
        value = getattr(fed, name)
        if value is not None and not value.is_absolute():
            setattr(fed, name, base / value)
    fed.trusted_certificates = [p if p.is_absolute() else base / p for p in fed.trusted_certificates]
    return config


def generate_config_text(server_name: str, data_dir: str) -> str:
    """A fresh config: the sample's documented text with new secrets and paths filled in."""
    sample = SAMPLE_CONFIG.read_text()
    return (
        sample.replace("server_name: localhost", f"server_name: {server_name}")
        .replace("data_dir: data", f"data_dir: {data_dir}")
        .replace("signing_key_path: null", f"signing_key_path: {data_dir}/signing.key")
        .replace("shared_secret: null", f"shared_secret: {secrets.token_urlsafe(32)}")
    )
