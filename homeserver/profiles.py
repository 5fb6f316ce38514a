"""User profiles (displayname, avatar_url) of local users."""
from __future__ import annotations

from typing import TYPE_CHECKING

from storage import accounts as accounts_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class Profiles:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs

    async def get(self, user_id: str) -> dict | None:
        user = await self.hs.db.run(accounts_store.get_user, user_id)
        if user is None:
            return None
        return {k: user[k] for k in ("displayname", "avatar_url") if user[k] is not None}

    async def member_profile(self, user_id: str) -> dict:
        """The profile fields copied into a member event's content."""
        return await self.get(user_id) or {}

    async def set_field(self, user_id: str, field: str, value: str | None) -> None:
        await self.hs.db.run(accounts_store.set_profile_field, user_id, field, value)
        await self.hs.membership.propagate_profile(user_id)
