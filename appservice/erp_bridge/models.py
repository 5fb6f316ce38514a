"""Request bodies of the ERP REST API (pydantic). Everything is checked before the bridge
touches the homeserver, so bad input creates nothing."""
from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from appservice.erp_bridge.ids import is_erp_id

MAX_FIELDS_BYTES = 32_768
MAX_BODY_CHARS = 32_768
MAX_PARTICIPANTS = 500


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def _erp_id(v: str, what: str) -> str:
    if not is_erp_id(v):
        raise ValueError(f"{what} must be 1-64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit")
    return v


def _text(v: str, what: str, max_len: int = 255) -> str:
    if not v.strip():
        raise ValueError(f"{what} must not be empty")
    if len(v) > max_len:
        raise ValueError(f"{what} must be at most {max_len} characters")
    if "\x00" in v:
        raise ValueError(f"{what} must not contain NUL characters")
    return v


class TenantBody(_Body):
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _text(v, "name")


class UserBody(_Body):
    # Required on PUT /_erp/v1/users/{id}; under /tenants/{t}/users/{id} it may be left out
    # (and must name the path's tenant if given).
    tenant_id: str | None = None
    display_name: str
    email: str | None = None
    active: StrictBool

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, v: str | None) -> str | None:
        return None if v is None else _erp_id(v, "tenant_id")

    @field_validator("display_name")
    @classmethod
    def _display_name(cls, v: str) -> str:
        return _text(v, "display_name")

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if len(v) > 320 or not re.fullmatch(r"[^@\s]+@[^@\s]+", v):
            raise ValueError("email must look like name@domain")
        return v


class ObjectBody(_Body):
    # The path names the tenant; a tenant_id in the body must be the same.
    tenant_id: str | None = None
    title: str
    participants: list[str] = Field(default_factory=list)
    fields: dict = Field(default_factory=dict)
    # None: unchanged (a new object is open).
    state: Literal["open", "closed"] | None = None

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, v: str | None) -> str | None:
        return None if v is None else _erp_id(v, "tenant_id")

    @field_validator("title")
    @classmethod
    def _title(cls, v: str) -> str:
        return _text(v, "title")

    @field_validator("participants")
    @classmethod
    def _participants(cls, v: list[str]) -> list[str]:
        if len(v) > MAX_PARTICIPANTS:
            raise ValueError(f"at most {MAX_PARTICIPANTS} participants")
        seen: dict[str, None] = {}
        for p in v:
            seen[_erp_id(p, "each participant")] = None
        return list(seen)  # duplicates collapse, order kept

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: dict) -> dict:
        encoded = json.dumps(v, ensure_ascii=False)
        if len(encoded.encode()) > MAX_FIELDS_BYTES:
            raise ValueError(f"fields must encode to at most {MAX_FIELDS_BYTES} bytes of JSON")
        if "\\u0000" in encoded:
            raise ValueError("fields must not contain NUL characters")
        _check_json_numbers(v)
        return v


def _check_json_numbers(value: object) -> None:
    """Matrix events only carry integers within +-(2**53 - 1) and no floats."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if abs(value) > 2**53 - 1:
            raise ValueError("fields: integers must be within +-(2**53 - 1)")
        return
    if isinstance(value, float):
        raise ValueError("fields: numbers must be integers (send decimals as strings)")
    if isinstance(value, dict):
        for item in value.values():
            _check_json_numbers(item)
    elif isinstance(value, list):
        for item in value:
            _check_json_numbers(item)


class MessageBody(_Body):
    sender: str | None = None
    body: str
    txn_id: str
    # "markdown": `body` is Markdown, sent with a rendered, sanitized formatted_body.
    format: Literal["plain", "markdown"] = "plain"

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str | None) -> str | None:
        return None if v is None else _erp_id(v, "sender")

    @field_validator("body")
    @classmethod
    def _body(cls, v: str) -> str:
        return _text(v, "body", MAX_BODY_CHARS)

    @field_validator("txn_id")
    @classmethod
    def _txn_id(cls, v: str) -> str:
        return check_txn_id(v)


def check_txn_id(v: str) -> str:
    if not re.fullmatch(r"[\x21-\x7e]{1,128}", v):
        raise ValueError("txn_id must be 1-128 printable ASCII characters without spaces")
    return v


class DeleteUserBody(_Body):
    # Also erase the profile and redact every message the user sent in the bridge's rooms.
    erase: StrictBool = False


class RemoveTenantBody(_Body):
    # Erase every user of the tenant (see DeleteUserBody) instead of only deactivating them.
    erase_users: StrictBool = False


class ObjectStateBody(_Body):
    state: Literal["open", "closed"]
