"""Application-service registrations: the YAML files listed in the homeserver config,
validated at start-up, with their namespaces compiled."""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


UNSTABLE_PUSH_EPHEMERAL = "de.sorunome.msc2409.push_ephemeral"


class Namespace(BaseModel):
    model_config = ConfigDict(extra="allow")
    exclusive: bool = False
    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        return v


class Namespaces(BaseModel):
    model_config = ConfigDict(extra="allow")
    users: list[Namespace] = []
    aliases: list[Namespace] = []
    rooms: list[Namespace] = []


class Registration(BaseModel):
    model_config = ConfigDict(extra="allow")  # registrations carry keys of other servers too
    id: str = Field(min_length=1)
    url: str | None
    as_token: str = Field(min_length=1)
    hs_token: str = Field(min_length=1)
    sender_localpart: str = Field(min_length=1)
    namespaces: Namespaces = Namespaces()
    rate_limited: bool = True
    receive_ephemeral: bool = False
    protocols: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _unstable_ephemeral_key(cls, raw):
        # matrix-appservice-bridge writes MSC2409's unstable name; it means the same.
        if isinstance(raw, dict) and "receive_ephemeral" not in raw and UNSTABLE_PUSH_EPHEMERAL in raw:
            raw = {**raw, "receive_ephemeral": raw[UNSTABLE_PUSH_EPHEMERAL]}
        return raw

    def model_post_init(self, _ctx) -> None:
        self._users = [(re.compile(n.regex), n.exclusive) for n in self.namespaces.users]
        self._aliases = [(re.compile(n.regex), n.exclusive) for n in self.namespaces.aliases]
        self._rooms = [(re.compile(n.regex), n.exclusive) for n in self.namespaces.rooms]

    def sender(self, server_name: str) -> str:
        return f"@{self.sender_localpart}:{server_name}"

    @staticmethod
    def _match(patterns, value: str, exclusive_only: bool) -> bool:
        return any(p.fullmatch(value) and (ex or not exclusive_only) for p, ex in patterns)

    def is_user_in_namespace(self, user_id: str, exclusive_only: bool = False) -> bool:
        return self._match(self._users, user_id, exclusive_only)

    def is_alias_in_namespace(self, alias: str, exclusive_only: bool = False) -> bool:
        return self._match(self._aliases, alias, exclusive_only)

    def is_room_in_namespace(self, room_id: str) -> bool:
        return self._match(self._rooms, room_id, False)


class RegistrationError(Exception):
    pass


def load_registration(path: Path) -> Registration:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise RegistrationError(f"cannot read application service registration {path}: {e.strerror}"
                                " (`make run`, i.e. `homeserver run-all`, generates the ERP bridge's)") from None
    except yaml.YAMLError as e:
        raise RegistrationError(f"registration {path} is not valid YAML: {e}") from None
    try:
        return Registration.model_validate(raw or {})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise RegistrationError(f"registration {path}: {problems}") from None


def load_all(paths: list[Path]) -> list[Registration]:
    regs = [load_registration(p) for p in paths]
    for attr in ("id", "as_token"):
        seen: set[str] = set()
        for r in regs:
            value = getattr(r, attr)
            if value in seen:
                raise RegistrationError(f"two application services share the same {attr}")
            seen.add(value)
    return regs
