"""Membership changes of local users: join (by id or alias, incl. restricted rooms),
knock, invite, leave, kick, ban, unban, and profile propagation to member events."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver import auth_rules, join_rules, room_aliases
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.event import Event
from homeserver.ids import is_valid_user_id
from homeserver.room_heads import RoomHead
from homeserver.tenancy import INVITE_ROOM_REFUSED, INVITEE_REFUSED, JOIN_REFUSED, KNOCK_REFUSED, room_tenant
from storage import accounts as accounts_store
from storage import state as state_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class Membership:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs

    async def require_invitable(self, tenant: str | None, invitee: str) -> None:
        """The invitee must exist (an application service may create it on demand), be of
        the room's tenant and be active. A user of another tenant is refused exactly like
        one who does not exist."""
        tenancy = self.hs.tenancy
        if self.hs.accounts.is_mine(invitee):
            appservices = getattr(self.hs, "appservices", None)
            if appservices is not None and not await self.hs.db.run(accounts_store.user_exists, invitee):
                await appservices.queries.query_user(invitee)
            if invitee not in await tenancy.users_of_tenant(tenant, [invitee]):
                raise forbidden(INVITEE_REFUSED)
            await self.hs.accounts.require_active_user(invitee)
        elif self.hs.federation is not None:  # another server's user: rooms open to federation
            if not self.hs.federation.exposure.tenant_open(tenant):
                raise forbidden(INVITEE_REFUSED)
        elif await tenancy.tenant_of(invitee) != tenant:
            raise forbidden(INVITEE_REFUSED)

    async def head(self, room_id: str, user_id: str) -> RoomHead:
        head = await self.hs.tenancy.head_for(user_id, room_id)
        if head is None:
            raise not_found(f"unknown room {room_id}")
        return head

    async def _entered_room(self, user_id: str, room_id_or_alias: str, refusal: str) -> tuple[str, RoomHead]:
        """The room a join or knock asks for. An unknown room and another tenant's answer
        alike, with the spec's 403; aliases answer as `room_aliases.resolve` says."""
        if room_id_or_alias.startswith("#"):
            room_id, _ = await room_aliases.resolve(self.hs, user_id, room_id_or_alias)
        elif room_id_or_alias.startswith("!"):
            room_id = room_id_or_alias
        else:
            raise MatrixError(400, "M_INVALID_PARAM", "expected a room id or alias")
        head = await self.hs.tenancy.head_for(user_id, room_id)
        if head is None:
            raise forbidden(refusal)
        return room_id, head

    async def join(self, user_id: str, room_id_or_alias: str, reason: str | None = None,
                   txn: tuple[str, str, str] | None = None, servers: list[str] | None = None) -> str:
        if self.hs.federation is not None:  # a room of another server: make_join/send_join
            remote_content: dict[str, Any] = {"membership": "join", **await self.hs.profiles.member_profile(user_id)}
            if reason:
                remote_content["reason"] = reason
            room_id_or_alias, joined = await self.hs.federation.membership.maybe_join(
                user_id, room_id_or_alias, remote_content, servers or [])
            if joined:
                await self.hs.db.run(state_store.unforget_room, user_id, room_id_or_alias)
                return room_id_or_alias
        room_id, head = await self._entered_room(user_id, room_id_or_alias, JOIN_REFUSED)
        self.hs.room_blocks.check(room_id)
        if head.membership_of(user_id) == "join":
            return room_id  # already in: joining again changes nothing
        content: dict[str, Any] = {"membership": "join", **await self.hs.profiles.member_profile(user_id)}
        if reason:
            content["reason"] = reason
        authoriser = await self._restricted_join_authoriser(head, user_id)
        if authoriser:
            content["join_authorised_via_users_server"] = authoriser
        await self.hs.event_creator.send(room_id, user_id, "m.room.member", content, user_id, txn=txn)
        await self.hs.db.run(state_store.unforget_room, user_id, room_id)
        return room_id

    async def _restricted_join_authoriser(self, head: RoomHead, user_id: str) -> str | None:
        """For restricted rooms: if the user is joined to a room the allow list names, pick
        a local member who may invite to vouch for the join (the auth rules check that
        member's standing again). A user in none of the allowed rooms gets the refusal."""
        if join_rules.join_rule(head) not in join_rules.RESTRICTED_RULES:
            return None
        if head.membership_of(user_id) in ("invite", "join"):
            return None
        if not await join_rules.in_allowed_room(self.hs, head, user_id):
            raise forbidden("you are not a member of any room this room admits members of")
        invite_level = auth_rules.get_named_level("invite", head.state)
        for member in sorted(head.joined_members()):
            if self.hs.accounts.is_mine(member) and \
                    auth_rules.get_user_power_level(member, head.state) >= invite_level:
                return member
        raise forbidden("no member of this room who may invite can authorise the join")

    async def knock(self, user_id: str, room_id_or_alias: str, reason: str | None = None,
                    servers: list[str] | None = None) -> str:
        """Ask to be let in to a room whose join rule is knock or knock_restricted. A room
        that does not exist and another organization's room answer alike."""
        if self.hs.federation is not None:  # a room of another server: make_knock/send_knock
            remote_content: dict[str, Any] = {"membership": "knock", **await self.hs.profiles.member_profile(user_id)}
            if reason:
                remote_content["reason"] = reason
            room_id_or_alias, knocked = await self.hs.federation.membership.maybe_join(
                user_id, room_id_or_alias, remote_content, servers or [], membership="knock")
            if knocked:
                await self.hs.db.run(state_store.unforget_room, user_id, room_id_or_alias)
                return room_id_or_alias
        room_id, _ = await self._entered_room(user_id, room_id_or_alias, KNOCK_REFUSED)
        self.hs.room_blocks.check(room_id)
        content: dict[str, Any] = {"membership": "knock", **await self.hs.profiles.member_profile(user_id)}
        if reason:
            content["reason"] = reason
        await self.hs.event_creator.send(room_id, user_id, "m.room.member", content, user_id)
        await self.hs.db.run(state_store.unforget_room, user_id, room_id)
        return room_id

    async def set_membership(self, sender: str, room_id: str, target: str, membership: str,
                             reason: str | None = None, extra: dict | None = None,
                             txn: tuple[str, str, str] | None = None) -> Event:
        """invite / leave / kick (leave of another) / ban / unban (leave of a banned user)."""
        if not is_valid_user_id(target):
            raise MatrixError(400, "M_INVALID_PARAM", "invalid user id")
        head = await self.hs.tenancy.head_for(sender, room_id)
        if head is None:  # an unknown room and another tenant's answer alike
            if membership == "invite":
                raise forbidden(INVITE_ROOM_REFUSED)  # the spec's answer for a refused invite
            raise not_found(f"unknown room {room_id}")
        if membership == "invite":
            self.hs.room_blocks.check(room_id)
            await self.require_invitable(room_tenant(head), target)
        content: dict[str, Any] = {"membership": membership}
        if reason:
            content["reason"] = reason
        if extra:
            content.update(extra)
        if membership == "leave" and sender == target and head.membership_of(target) in (None, "leave"):
            raise forbidden("you are not in this room")
        if membership == "invite" and target != sender:
            # the invitee's profile shows in the invite as clients expect
            content.update({k: v for k, v in (await self.hs.profiles.member_profile(target)).items()
                            if k not in content})
        if self.hs.federation is not None:  # remote invitees; declining another server's invite
            sent = await self.hs.federation.membership.send_membership(head, sender, target, content)
            if sent is not None:
                return sent
        return await self.hs.event_creator.send(room_id, sender, "m.room.member", content, target, txn=txn)

    async def propagate_profile(self, user_id: str) -> None:
        """After a displayname/avatar change, refresh the user's member event in each room."""
        profile = await self.hs.profiles.member_profile(user_id)
        rooms = await self.hs.db.run(state_store.rooms_for_user, user_id)
        for room_id in rooms:
            head = await self.hs.room_heads.get(room_id)
            if head is None:
                continue
            current = head.state.get(("m.room.member", user_id))
            if current is None or current.membership != "join":
                continue
            content = {k: v for k, v in current.content.items() if k not in ("displayname", "avatar_url")}
            content.update(profile)
            if content == current.content:
                continue
            try:
                await self.hs.event_creator.send(room_id, user_id, "m.room.member", content, user_id)
            except MatrixError:
                pass  # e.g. no longer allowed to change state there: the profile still changed
