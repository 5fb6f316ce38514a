"""The bridge's configuration: a pydantic model read from YAML.

The bridge config is the one source of truth for every secret: the application-service
tokens (as_token, hs_token), the ERP API token and the webhook secret. `generate-config`
writes fresh random ones; `generate-registration` derives the homeserver's registration
file from the config, first filling any missing token into the config file itself, so the
two files always agree.
"""
from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_LOCALPART_CHARS = re.compile(r"^[a-z0-9._=/-]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _http_url(v: str | None) -> str | None:
    if v is None:
        return v
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return v.rstrip("/")


class HomeserverConfig(_Strict):
    # Where the bridge reaches the client-server API.
    url: str = "http://127.0.0.1:8008"
    # Where clients (Element) reach it, for login links; None means `url`.
    public_url: str | None = None
    # The homeserver's server_name: the domain of every user id and alias.
    server_name: str = "localhost"

    @field_validator("url", "public_url")
    @classmethod
    def _urls(cls, v: str | None) -> str | None:
        return _http_url(v)

    @field_validator("server_name")
    @classmethod
    def _server_name(cls, v: str) -> str:
        if not v or any(c in v for c in "/@!#$ ") or len(v) > 230:
            raise ValueError("must be a hostname with an optional :port")
        return v

    @property
    def client_url(self) -> str:
        return self.public_url or self.url


class ListenConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(9010, ge=0, le=65535)


class AppServiceConfig(_Strict):
    id: str = "erp-bridge"
    # The URL the homeserver pushes transactions to; None means http://<listen.host>:<listen.port>.
    url: str | None = None
    as_token: str | None = None
    hs_token: str | None = None
    sender_localpart: str = "_erp_bot"
    # Every user and alias of the bridge starts with @<prefix> / #<prefix> (exclusive).
    namespace_prefix: str = "_erp_"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _http_url(v)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._~-]{1,64}", v):
            raise ValueError("must be 1-64 characters of A-Z a-z 0-9 . _ ~ -")
        return v

    @field_validator("as_token", "hs_token")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        if v is not None and (len(v) < 16 or not re.fullmatch(r"[\x21-\x7e]+", v)):
            raise ValueError("must be at least 16 printable characters without spaces")
        return v

    @field_validator("namespace_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.fullmatch(r"_[a-z0-9]+_", v):
            raise ValueError("must look like _name_ (lowercase letters and digits between underscores)")
        return v

    @model_validator(mode="after")
    def _sender_in_namespace(self) -> "AppServiceConfig":
        if not _LOCALPART_CHARS.match(self.sender_localpart):
            raise ValueError("sender_localpart: must be a valid lowercase user localpart")
        if not self.sender_localpart.startswith(self.namespace_prefix):
            raise ValueError(
                f"sender_localpart: must start with namespace_prefix {self.namespace_prefix!r}")
        return self


class ErpConfig(_Strict):
    # Bearer token the ERP must present on every /_erp/v1 call.
    api_token: str | None = None
    # Where every message in a bridged room is POSTed; None disables the webhook.
    webhook_url: str | None = None
    # HMAC-SHA256 key for the X-ERP-Signature header.
    webhook_secret: str | None = None
    webhook_timeout_s: float = Field(10.0, gt=0, le=300)
    # Retries back off exponentially from webhook_initial_backoff_s up to this cap.
    webhook_initial_backoff_s: float = Field(0.5, gt=0, le=60)
    webhook_max_backoff_s: float = Field(10.0, gt=0, le=3600)
    # How the ERP reaches the bridge, for file download links; None = http://<listen.host>:<listen.port>.
    bridge_url: str | None = None
    # How long a file download link (webhook, message history) stays valid.
    media_link_ttl_s: int = Field(7 * 24 * 3600, ge=60, le=365 * 24 * 3600)
    # Largest attachment the ERP may post.
    max_attachment_bytes: int = Field(50 * 1024 * 1024, ge=1024)

    @field_validator("webhook_url", "bridge_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _http_url(v)

    @field_validator("api_token", "webhook_secret")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        if v is not None and len(v) < 16:
            raise ValueError("must be at least 16 characters")
        return v

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> "ErpConfig":
        if self.webhook_url and not self.webhook_secret:
            raise ValueError("webhook_secret: required when webhook_url is set")
        return self


class DatabaseConfig(_Strict):
    # libpq DSN. None: the homeserver's embedded PostgreSQL, through its socket directory.
    dsn: str | None = None
    # The homeserver's embedded cluster directory (<homeserver data_dir>/postgres), used
    # when dsn is None. Relative paths are relative to this config file.
    embedded_pgdata: Path = Path("data/postgres")
    max_connections: int = Field(5, ge=1, le=100)
    # How long start-up waits for the database (the homeserver may still be starting it).
    connect_timeout_s: float = Field(120.0, ge=0)

    @property
    def effective_dsn(self) -> str:
        if self.dsn:
            return self.dsn
        return f"postgresql://postgres:@/postgres?host={quote(str(self.embedded_pgdata), safe='/')}"


class BridgeConfig(_Strict):
    homeserver: HomeserverConfig = HomeserverConfig()
    listen: ListenConfig = ListenConfig()
    appservice: AppServiceConfig = AppServiceConfig()
    erp: ErpConfig = ErpConfig()
    database: DatabaseConfig = DatabaseConfig()
    # Element Web that ERP users are sent to by login links (see docs/erp-bridge.md).
    element_url: str = "https://app.element.io"
    # Path (relative to element_url) of the small sign-in helper page served next to Element.
    element_login_page: str = "erp-login.html"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("element_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _http_url(v)

    @field_validator("element_login_page")
    @classmethod
    def _login_page(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*", v):
            raise ValueError("must be a relative path like erp-login.html")
        return v

    @property
    def appservice_url(self) -> str:
        if self.appservice.url:
            return self.appservice.url
        return self._listen_url()

    @property
    def bridge_url(self) -> str:
        return self.erp.bridge_url or self._listen_url()

    def _listen_url(self) -> str:
        host = self.listen.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.listen.port}"

    @property
    def bot_user_id(self) -> str:
        return f"@{self.appservice.sender_localpart}:{self.homeserver.server_name}"

    def require_secrets(self) -> None:
        """`run` needs every secret; say which are missing."""
        missing = [name for name, value in (
            ("appservice.as_token", self.appservice.as_token),
            ("appservice.hs_token", self.appservice.hs_token),
            ("erp.api_token", self.erp.api_token),
        ) if not value]
        if missing:
            raise ConfigError(
                "missing secrets: " + ", ".join(missing)
                + " (run `erp-bridge generate-registration`, which fills them in, or set them)")


class ConfigError(Exception):
    pass


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def parse_config(raw: object, base_dir: Path | None = None, source: str = "config") -> BridgeConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must hold a mapping of keys")
    try:
        config = BridgeConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{source} has errors:\n{_describe(e)}") from None
    if base_dir is not None and not config.database.embedded_pgdata.is_absolute():
        config.database.embedded_pgdata = (base_dir / config.database.embedded_pgdata).resolve()
    return config


def load_config(path: Path) -> BridgeConfig:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    return parse_config(raw, path.resolve().parent, f"config file {path}")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


SAMPLE_CONFIG = """\
# ERP bridge configuration. Keys left out take the defaults shown.
# Unknown keys and bad values stop start-up with a message naming the key.

homeserver:
  # Where the bridge reaches the homeserver's client-server API.
  url: {hs_url}
  # Where clients (Element) reach the homeserver, used in login links; null = url.
  public_url: null
  # The homeserver's server_name (the domain of @user:server_name).
  server_name: {server_name}

# Where the bridge listens, for both the ERP REST API (/_erp/v1) and the
# homeserver's application-service calls (/_matrix/app/v1).
listen:
  host: 127.0.0.1
  port: {port}

appservice:
  # Registration id; must be unique on the homeserver.
  id: erp-bridge
  # URL the homeserver pushes transactions to; null = http://<listen.host>:<listen.port>.
  url: null
  # Secrets shared with the homeserver through the registration file
  # (`erp-bridge generate-registration` writes it from these).
  as_token: {as_token}
  hs_token: {hs_token}
  # The main bridge bot (@_erp_bot:server_name). It has no tenant; each tenant's rooms
  # are run by a per-tenant bot @<prefix>bot_<tenant>.
  sender_localpart: _erp_bot
  # Exclusive namespace of every bridge user (@_erp_...) and alias (#_erp_...).
  namespace_prefix: _erp_

erp:
  # The ERP sends `Authorization: Bearer <api_token>` on every /_erp/v1 call.
  api_token: {api_token}
  # Every message in a bridged room is POSTed here (null disables the webhook).
  webhook_url: {webhook_url}
  # Key of the HMAC-SHA256 signature in the X-ERP-Signature header.
  webhook_secret: {webhook_secret}
  webhook_timeout_s: 10
  # Retry backoff: doubles from the initial delay up to the cap.
  webhook_initial_backoff_s: 0.5
  webhook_max_backoff_s: 10
  # How the ERP reaches the bridge (used in file download links);
  # null = http://<listen.host>:<listen.port>.
  bridge_url: null
  # How long a file download link stays valid (seconds).
  media_link_ttl_s: 604800
  # Largest file the ERP may post as an attachment (bytes).
  max_attachment_bytes: 52428800

database:
  # libpq DSN of the PostgreSQL holding the bridge's schema `erp_bridge`.
  # null = the homeserver's embedded PostgreSQL, reached through its socket directory:
  dsn: {dsn}
  # <homeserver data_dir>/postgres, relative to this file (used when dsn is null).
  embedded_pgdata: {pgdata}
  max_connections: 5
  # How long start-up waits for the database to accept connections.
  connect_timeout_s: 120

# The Element Web instance ERP users are sent to by login links, and the sign-in helper
# page placed next to its index.html (`erp-bridge element-login-page` writes it).
element_url: {element_url}
element_login_page: erp-login.html

log_level: INFO
"""


def generate_config_text(*, server_name: str = "localhost", hs_url: str = "http://127.0.0.1:8008",
                         port: int = 9010, webhook_url: str | None = None,
                         dsn: str | None = None, pgdata: str = "data/postgres",
                         element_url: str = "https://app.element.io") -> str:
    def y(v: object) -> str:
        return "null" if v is None else yaml.safe_dump(v, default_style=None).strip().removesuffix("\n...")

    text = SAMPLE_CONFIG.format(
        hs_url=y(hs_url), server_name=y(server_name), port=port,
        as_token=y(new_secret()), hs_token=y(new_secret()), api_token=y(new_secret()),
        webhook_url=y(webhook_url), webhook_secret=y(new_secret()), dsn=y(dsn),
        pgdata=y(pgdata), element_url=y(element_url))
    parse_config(yaml.safe_load(text))  # the template and the arguments must make a valid config
    return text


_TOKEN_KEYS = (("appservice", "as_token"), ("appservice", "hs_token"),
               ("erp", "api_token"), ("erp", "webhook_secret"))


def fill_missing_secrets(path: Path) -> list[str]:
    """Write a fresh random value into every secret of the config file that is missing or
    null, keeping the rest of the file (comments included) as it is. Returns the keys filled."""
    text = path.read_text()
    raw = yaml.safe_load(text) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys")
    filled = []
    for section, key in _TOKEN_KEYS:
        sect = raw.get(section)
        if isinstance(sect, dict) and sect.get(key):
            continue
        value = json.dumps(new_secret())  # quoted: always a YAML string
        filled.append(f"{section}.{key}")
        # Replace an existing `key: null` / `key:` line inside the section if there is one.
        pattern = re.compile(
            rf"^(?P<indent>[ \t]+){key}:[ \t]*(?:null|~|''|\"\")?[ \t]*(?P<comment>#.*)?$", re.M)
        section_match = re.search(rf"^{section}:[ \t]*(#.*)?$", text, re.M)
        if section_match:
            # The section runs until the next top-level key.
            start = section_match.end()
            nxt = re.search(r"^[^\s#]", text[start + 1:], re.M)
            end = start + 1 + nxt.start() if nxt else len(text)
            m = pattern.search(text, start, end)
            if m:
                comment = f"  {m.group('comment')}" if m.group("comment") else ""
                text = text[:m.start()] + f"{m.group('indent')}{key}: {value}{comment}" + text[m.end():]
            else:
                text = text[:start] + f"\n  {key}: {value}" + text[start:]
        else:
            text = text.rstrip("\n") + f"\n{section}:\n  {key}: {value}\n"
    if filled:
        parse_config(yaml.safe_load(text), source=f"config file {path}")  # still valid
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return filled
