"""ERP identifiers and the Matrix ids and aliases derived from them.

ERP ids (tenant, user, object id) are 1-64 characters of A-Z a-z 0-9 . _ -; object types
are lowercase words (`order`, `sales-order`). Matrix localparts are lowercase, so an
uppercase letter X becomes `=` + its hex code (`SO-7` -> `=53=4f-7`), the way other
bridges escape; the mapping is one-to-one.

    ERP user u             @<prefix>u_<u>:server
    tenant t's bot         @<prefix>bot_<t>:server
    tenant t's space       #<prefix>space.<t>:server
    tenant t's general     #<prefix>general.<t>:server
    tenant t's object      #<prefix>obj.<t'>.<type>.<id>:server

In an object alias the tenant is written with `.` escaped too (`=2e`), so it holds no
`.`; object types hold none either, so the alias splits back into (tenant, type, id)
and two tenants' objects of the same id never share a name. The three forms start with
different words and never collide; neither do they with the aliases of schema version 1
(`#<prefix><type>_<id>`, object types contain no `.`). An object alias longer than Matrix
allows (255 bytes) is replaced by `#<prefix>obj.h<digest>`, a hash of the three parts.
"""
from __future__ import annotations

import hashlib
import re

ERP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
OBJECT_TYPE = re.compile(r"[a-z][a-z0-9-]{0,31}")
_KEEP = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


def is_erp_id(value: str) -> bool:
    return bool(ERP_ID.fullmatch(value))


def is_object_type(value: str) -> bool:
    return bool(OBJECT_TYPE.fullmatch(value))


def encode_localpart(erp_id: str) -> str:
    """Escape an ERP id into characters allowed in a Matrix localpart."""
    return "".join(c if c in _KEEP else "".join(f"={b:02x}" for b in c.encode()) for c in erp_id)


def encode_tenant_segment(tenant_id: str) -> str:
    """A tenant id as one dot-free alias segment (one-to-one)."""
    return encode_localpart(tenant_id).replace(".", "=2e")


MAX_ALIAS_BYTES = 255


class Ids:
    """The Matrix names of the bridge's entities, for one prefix and server name."""

    def __init__(self, prefix: str, server_name: str) -> None:
        self.prefix = prefix
        self.server_name = server_name

    def user(self, erp_user_id: str) -> str:
        return f"@{self.user_localpart(erp_user_id)}:{self.server_name}"

    def user_localpart(self, erp_user_id: str) -> str:
        return f"{self.prefix}u_{encode_localpart(erp_user_id)}"

    def tenant_bot(self, tenant_id: str) -> str:
        return f"@{self.tenant_bot_localpart(tenant_id)}:{self.server_name}"

    def tenant_bot_localpart(self, tenant_id: str) -> str:
        return f"{self.prefix}bot_{encode_localpart(tenant_id)}"

    def space_alias_localpart(self, tenant_id: str) -> str:
        return f"{self.prefix}space.{encode_localpart(tenant_id)}"

    def general_alias_localpart(self, tenant_id: str) -> str:
        return f"{self.prefix}general.{encode_localpart(tenant_id)}"

    def object_alias_localpart(self, tenant_id: str, object_type: str, object_id: str) -> str:
        lp = (f"{self.prefix}obj.{encode_tenant_segment(tenant_id)}.{object_type}."
              f"{encode_localpart(object_id)}")
        if len(self.alias(lp).encode()) <= MAX_ALIAS_BYTES:
            return lp
        digest = hashlib.sha256(f"{tenant_id}\0{object_type}\0{object_id}".encode()).hexdigest()
        return f"{self.prefix}obj.h{digest[:40]}"

    def legacy_object_alias_localpart(self, object_type: str, object_id: str) -> str:
        """Schema version 1's tenant-less object alias (only for migrating)."""
        return f"{self.prefix}{object_type}_{encode_localpart(object_id)}"

    def alias(self, localpart: str) -> str:
        return f"#{localpart}:{self.server_name}"

    def is_puppet(self, user_id: str) -> bool:
        """A user the bridge made for an ERP user (not a bot, not a native Matrix user)."""
        return user_id.startswith(f"@{self.prefix}u_") and user_id.endswith(f":{self.server_name}")

    def in_namespace(self, user_id: str) -> bool:
        return user_id.startswith(f"@{self.prefix}") and user_id.endswith(f":{self.server_name}")

    def user_regex(self) -> str:
        return f"@{re.escape(self.prefix)}.*:{re.escape(self.server_name)}"

    def alias_regex(self) -> str:
        return f"#{re.escape(self.prefix)}.*:{re.escape(self.server_name)}"
