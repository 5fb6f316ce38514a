"""Membership across servers: the handshakes (make_join/send_join, make_leave/send_leave,
make_knock/send_knock, invite) on both sides.

Resident side: a template on top of our head, then the signed event is checked like any
received PDU, persisted, and forwarded to the room's other servers.

Joining side: make_join on one of the given servers, our signature, send_join; the
returned state and auth chain are checked (signatures, hashes, each event against its
auth events, the join against the state) and stored as outliers; the join becomes the
first timeline event and the room's head is built from the returned state. An invite
from another server is counter-signed and kept in a stub room (the invite is its only
state) until the invitee joins (make_join through the inviter's server) or declines
(make_leave/send_leave)."""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.event import Event
from homeserver.event_creation import event_row, now_ms
from homeserver.event_hashing import sign_event
from homeserver.federation.acl import server_allowed
from homeserver.federation.client import FederationError, path
from homeserver.federation.exposure import server_of, servers_in_room
from homeserver.federation.inbound import PduError, auth_failure
from homeserver.federation.pdu_format import PduFormatError, parse_pdu
from homeserver.federation.sender import NO_SEND
from homeserver.ids import split_id
from homeserver.room_heads import RoomHead
from homeserver.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from storage import federation as store
from storage.events import RemoteRow

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
F1 = "/_matrix/federation/v1"
F2 = "/_matrix/federation/v2"
STRIPPED_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                  "m.room.canonical_alias", "m.room.encryption", "m.room.topic")


def stripped_state(head: RoomHead, extra: list[Event] = (), full: bool = False) -> list[dict]:
    """The room state an invitee or knocker is shown. `full`: as signed PDUs (what newer
    servers want in invite_room_state, to check the create event), else stripped."""
    events = [head.state[(t, "")] for t in STRIPPED_TYPES if (t, "") in head.state] + list(extra)
    if full:
        return [e.pdu for e in events]
    return [strip(e.pdu) for e in events]


def strip(pdu: dict) -> dict:
    return {k: pdu[k] for k in ("type", "state_key", "content", "sender") if k in pdu}


def is_stub(head: RoomHead) -> bool:
    """A room known only through an invite (or a knock/leave) from another server."""
    return ("m.room.create", "") not in head.state


class FederatedMembership:
    def __init__(self, hs: "HomeServer", federation) -> None:
        self.hs = hs
        self.federation = federation

    # ==== resident side ================================================================

    async def _resident_head(self, origin: str, room_id: str) -> RoomHead:
        head = await self.federation.exposure.room_for(room_id, origin, member_required=False)
        if head is None or is_stub(head) or not self._host_in_room(head):
            raise not_found("unknown room")
        if not server_allowed(origin, self.federation.inbound.acl_of(head)):
            raise forbidden("your server is denied by the room's server ACL")
        return head

    def _host_in_room(self, head: RoomHead) -> bool:
        return self.hs.server_name in servers_in_room(head)

    async def make(self, origin: str, room_id: str, user_id: str, membership: str,
                   versions: list[str] | None) -> dict[str, Any]:
        if server_of(user_id) != origin:
            raise forbidden("the user is not of your server")
        head = await self._resident_head(origin, room_id)
        rv = head.room_version
        if membership in ("join", "knock") and rv.identifier not in (versions or ["1"]):
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION",
                              f"the room's version {rv.identifier} is not supported by your server",
                              room_version=rv.identifier)
        content: dict[str, Any] = {"membership": membership}
        if membership == "join":
            authoriser = await self._restricted_authoriser(head, user_id)
            if authoriser:
                content["join_authorised_via_users_server"] = authoriser
        template = self.hs.event_creator.template(head, user_id, "m.room.member", content, user_id)
        failure = auth_failure(Event("$template", rv, template), head.state)
        if failure is not None:
            raise forbidden(f"you may not {membership} this room: {failure}")
        return {"room_version": rv.identifier, "event": template}

    async def _restricted_authoriser(self, head: RoomHead, user_id: str) -> str | None:
        """Restricted rooms: a local member who may invite vouches for a user who is in an
        allowed room (as far as this server knows)."""
        from homeserver import auth_rules, join_rules
        if join_rules.join_rule(head) not in join_rules.RESTRICTED_RULES:
            return None
        if head.membership_of(user_id) in ("invite", "join"):
            return None
        if not await join_rules.in_allowed_room(self.hs, head, user_id):
            return None  # the auth rules refuse the join; make_join says so
        level = auth_rules.get_named_level("invite", head.state)
        for member in sorted(head.joined_members()):
            if self.hs.accounts.is_mine(member) and auth_rules.get_user_power_level(member, head.state) >= level:
                return member
        return None

    async def send(self, origin: str, room_id: str, event_id: str, raw: Any, membership: str) -> dict[str, Any]:
        inbound = self.federation.inbound
        await self._resident_head(origin, room_id)
        async with inbound.lock(room_id):
            head = await self._resident_head(origin, room_id)
            rv = head.room_version
            try:
                event = inbound.parse(head, raw)
            except PduError as e:
                raise MatrixError(400, "M_BAD_JSON", str(e)) from None
            if event.event_id != event_id or event.type != "m.room.member" or event.state_key != event.sender \
                    or event.membership != membership or server_of(event.sender) != origin:
                raise MatrixError(400, "M_BAD_JSON", f"not a {membership} of a user of your server")
            via = event.content.get("join_authorised_via_users_server")
            if membership == "join" and isinstance(via, str) and self.hs.accounts.is_mine(via):
                sign_event(event.pdu, rv, self.hs.server_name, self.hs.signing_key)
            try:
                await inbound.verify_signatures(event)
                status = (await self.federation.inbound.statuses([event_id])).get(event_id)
                if status is None or status[0] == "outlier":
                    await inbound.accept(origin, room_id, rv, event, replaces_outlier=status is not None)
                elif status[0] == "rejected":
                    raise PduError("the event was rejected before")
            except PduError as e:
                raise forbidden(str(e)) from None
            self.federation.sender.forward(event, {origin})
            head = await self._resident_head(origin, room_id)
        if membership == "join":
            state = await self.federation.serving.state_before(head, event_id)
            chain = await self.federation.serving.auth_chain(head, [e.event_id for e in state])
            pdu = self.federation.serving.pdu
            return {"event": event.pdu, "state": [pdu(e) for e in state], "auth_chain": [pdu(e) for e in chain],
                    "members_omitted": False, "origin": self.hs.server_name}
        if membership == "knock":
            return {"knock_room_state": stripped_state(head)}
        return {}

    async def on_invite(self, origin: str, room_id: str, event_id: str, body: dict) -> dict[str, Any]:
        rv = KNOWN_ROOM_VERSIONS.get(body.get("room_version", "1") if isinstance(body.get("room_version"), str) else "")
        if rv is None:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", "unsupported room version",
                              room_version=body.get("room_version"))
        try:
            event, _ = parse_pdu(body.get("event"), rv)
        except PduFormatError as e:
            raise MatrixError(400, "M_BAD_JSON", str(e)) from None
        invitee = event.state_key
        if event.event_id != event_id or event.room_id != room_id or event.type != "m.room.member" \
                or event.membership != "invite" or not isinstance(invitee, str) \
                or not self.hs.accounts.is_mine(invitee) or server_of(event.sender) != origin:
            raise MatrixError(400, "M_BAD_JSON", "not an invite of a user of this server")
        profile = await self.hs.profiles.get(invitee)
        if profile is None or not self.federation.exposure.tenant_open(await self.hs.tenancy.tenant_of(invitee)):
            raise forbidden("this user may not be invited to rooms of other servers")
        try:
            await self.federation.inbound.verify_signatures(event)
        except PduError as e:
            raise forbidden(str(e)) from None
        sign_event(event.pdu, rv, self.hs.server_name, self.hs.signing_key)
        head = await self.hs.room_heads.get(room_id)
        if head is None or is_stub(head) or not self._host_in_room(head):
            invite_state = body.get("invite_room_state")
            await self._store_stub_membership(room_id, rv, event, invite_state if isinstance(invite_state, list) else [])
        return {"event": event.pdu}

    # ==== stub rooms (known through an invite) ========================================

    async def _store_stub_membership(self, room_id: str, rv: RoomVersion, event: Event,
                                     invite_state: list | None) -> None:
        """Our user's invite (or leave) in a room we are not in: the room's only state."""
        inbound = self.federation.inbound
        async with inbound.lock(room_id):
            head = await self.hs.room_heads.get(room_id)
            if head is not None and not is_stub(head):
                return  # joined meanwhile: the event arrives with the room's events
            if invite_state is not None:
                await self.hs.db.run(store.put_invite_state, room_id, event.state_key, json.dumps(invite_state))
            state = {k: e.event_id for k, e in head.state.items()} if head else {}
            state[event.key] = event.event_id
            group, chain = inbound.state.describe_group(room_id, state, None)
            row = event_row(event, group.id, group, None, apply_redaction=False)
            row.remote = RemoteRow(current_state_delta={event.key: (event.event_id, event.membership)},
                                   extremities_removed=list(head.extremities) if head else [])
            event.internal.update(redacted_by=None, unsigned=None)
            event.internal[NO_SEND] = True
            if head is None:
                tenant = await self.hs.tenancy.tenant_of(event.state_key)
                row.new_room = (rv.identifier, event.sender, tenant)
                head = RoomHead(room_id=room_id, room_version=rv, state={}, extremities=[], depth=0,
                                state_group=0, chain_length=0, remote_tenant=(tenant,))
                self.hs.room_heads.add(head)
            head.apply_state(event)
            head.extremities = [event.event_id]
            head.depth = max(head.depth, event.depth)
            head.state_group, head.chain_length = group.id, chain
            head.version += 1
            self.hs.event_cache.put(event)
            await self.hs.persister.enqueue(row, event)

    async def invite_state(self, room_id: str, user_id: str) -> list[dict]:
        text = await self.hs.db.run(store.get_invite_state, room_id, user_id)
        events = [strip(e) for e in json.loads(text) if isinstance(e, dict)] if text else []
        head = await self.hs.room_heads.get(room_id)
        own = head.state.get(("m.room.member", user_id)) if head else None
        if own is not None:
            events = [e for e in events if not (isinstance(e, dict) and e.get("type") == "m.room.member"
                                                 and e.get("state_key") == user_id)]
            events.append({"type": own.type, "state_key": own.state_key, "content": own.content,
                           "sender": own.sender})
        return events

    # ==== joining side ===============================================================

    async def maybe_join(self, user_id: str, room_id_or_alias: str, content: dict,
                         servers: list[str], membership: str = "join") -> tuple[str, bool]:
        """Join (or knock) over federation when this server is not in the room: (room id,
        True). Otherwise (room id or alias to use locally, False); another server's alias
        is resolved through that server."""
        if room_id_or_alias.startswith("#"):
            parts = split_id(room_id_or_alias, "#")
            if parts is None or parts[1] == self.hs.server_name:
                return room_id_or_alias, False
            try:
                answer = await self.federation.client.get(parts[1], F1 + "/query/directory",
                                                          {"room_alias": room_id_or_alias})
            except FederationError as e:
                if e.status == 404:
                    raise not_found(f"room alias {room_id_or_alias} not found") from None
                raise MatrixError(502, "M_UNKNOWN", f"could not resolve the alias: {e.error}") from None
            room_id = answer.get("room_id") if isinstance(answer, dict) else None
            if not isinstance(room_id, str):
                raise not_found(f"room alias {room_id_or_alias} not found")
            servers = [s for s in answer.get("servers") or [] if isinstance(s, str)] + servers
        else:
            room_id = room_id_or_alias
        head = await self.hs.room_heads.get(room_id)
        if head is not None and not is_stub(head) and (
                self._host_in_room(head) or not servers_in_room(head) - {self.hs.server_name}):
            return room_id, False  # we are in the room (or it is ours and empty): join here
        candidates = list(servers)
        if head is not None:
            invite = head.state.get(("m.room.member", user_id))
            if invite is not None:
                candidates.append(server_of(invite.sender))
            candidates += sorted(servers_in_room(head, ("join", "invite", "leave")))
        domain = split_id(room_id, "!")
        if domain is not None:
            candidates.append(domain[1])
        candidates = [s for s in dict.fromkeys(candidates) if s and s != self.hs.server_name]
        if not candidates:
            return room_id, False  # no server to ask: the local path answers
        self.hs.room_blocks.check(room_id)  # rooms an admin blocked stay shut, wherever they live
        if membership == "knock":
            await self.knock_remote(user_id, room_id, candidates, content)
        else:
            await self.join_remote(user_id, room_id, candidates, content)
        return room_id, True

    async def knock_remote(self, user_id: str, room_id: str, servers: list[str], content: dict) -> None:
        """make_knock, our signature, send_knock; the room is then known here through the
        knock (and the state its server showed) until the knock is answered."""
        if not self.federation.exposure.tenant_open(await self.hs.tenancy.tenant_of(user_id)):
            raise forbidden("your organization does not take part in rooms of other servers")
        client = self.federation.client
        last: Exception | None = None
        for server in servers:
            try:
                made = await client.get(server, path(F1 + "/make_knock/%s/%s", room_id, user_id),
                                        {"ver": list(KNOWN_ROOM_VERSIONS)})
                rv = KNOWN_ROOM_VERSIONS.get(made.get("room_version", ""))
                if rv is None or not rv.knock_join_rule or not isinstance(made.get("event"), dict):
                    raise FederationError(server, 0, "M_UNKNOWN", "bad make_knock answer")
                event = self._fill_template(made["event"], rv, user_id, "knock", content)
                answer = await client.put(server, path(F1 + "/send_knock/%s/%s", room_id, event.event_id), event.pdu)
                state = answer.get("knock_room_state") if isinstance(answer, dict) else None
                await self._store_stub_membership(room_id, rv, event, state if isinstance(state, list) else [])
                return
            except FederationError as e:
                last = e
                if e.status == 403:
                    raise forbidden(e.error or "the room's server refused the knock") from None
        raise MatrixError(502 if last else 404, "M_UNKNOWN", f"could not knock on the room: {last}")

    async def join_remote(self, user_id: str, room_id: str, servers: list[str], content: dict) -> None:
        tenant = await self.hs.tenancy.tenant_of(user_id)
        if not self.federation.exposure.tenant_open(tenant):
            raise forbidden("your organization does not take part in rooms of other servers")
        client = self.federation.client
        versions = list(KNOWN_ROOM_VERSIONS)
        last: Exception | None = None
        for server in servers:
            try:
                made = await client.get(server, path(F1 + "/make_join/%s/%s", room_id, user_id), {"ver": versions})
                rv = KNOWN_ROOM_VERSIONS.get(made.get("room_version", "1"))
                template = made.get("event")
                if rv is None or not isinstance(template, dict):
                    raise FederationError(server, 0, "M_UNKNOWN", "bad make_join answer")
                event = self._fill_template(template, rv, user_id, "join", content)
                answer = await client.put(server, path(F2 + "/send_join/%s/%s", room_id, event.event_id), event.pdu)
                await self._complete_join(server, room_id, rv, event, answer, tenant)
                return
            except FederationError as e:
                logger.info("joining %s through %s failed: %s", room_id, server, e)
                last = e
                if e.status == 403 and e.errcode == "M_FORBIDDEN":
                    raise forbidden(e.error or "the room's server refused the join") from None
            except PduError as e:
                logger.info("joining %s through %s failed: %s", room_id, server, e)
                last = e
        if isinstance(last, FederationError) and last.status == 404:
            raise not_found("no server knows this room")
        raise MatrixError(502 if last else 404, "M_UNKNOWN", f"could not join the room: {last}")

    def _fill_template(self, template: dict, rv: RoomVersion, user_id: str, membership: str,
                       content: dict) -> Event:
        pdu = {k: v for k, v in template.items() if k not in ("signatures", "hashes", "unsigned", "event_id")}
        if pdu.get("sender") != user_id or pdu.get("state_key") != user_id or pdu.get("type") != "m.room.member":
            raise FederationError("", 0, "M_BAD_JSON", "the template is not for this user")
        given = pdu.get("content") if isinstance(pdu.get("content"), dict) else {}
        pdu["content"] = {**content, **{k: v for k, v in given.items() if k == "join_authorised_via_users_server"},
                          "membership": membership}
        if not rv.event_ids_are_hashes or "origin" in template:
            pdu["origin"] = self.hs.server_name
        pdu["origin_server_ts"] = now_ms()
        return self.hs.event_creator.build(pdu, rv)

    async def _complete_join(self, server: str, room_id: str, rv: RoomVersion, event: Event, answer: Any,
                             tenant: str | None) -> None:
        inbound = self.federation.inbound
        if not isinstance(answer, dict):
            raise PduError("bad send_join answer")
        returned = answer.get("event")
        if isinstance(returned, dict):  # the resident may have signed it (restricted joins)
            try:
                signed, _ = parse_pdu(returned, rv)
                if signed.event_id == event.event_id:
                    event = signed
            except PduFormatError:
                pass
        state_events = inbound._parse_all(answer.get("state"), rv, room_id)
        chain_events = inbound._parse_all(answer.get("auth_chain"), rv, room_id)
        async with inbound.lock(room_id):
            accepted = await inbound.store_outliers(room_id, rv, chain_events + state_events)
            known = await inbound.state.events([e.event_id for e in state_events], rv)
            state = {}
            for ev in state_events:
                got = accepted.get(ev.event_id) or known.get(ev.event_id)
                if got is not None and not got.rejected and got.is_state():
                    state[got.key] = got.event_id
            create_id = state.get(("m.room.create", ""))
            if create_id is None or (rv.room_id_from_create and "!" + create_id[1:] != room_id):
                raise PduError("the returned state has no (or the wrong) create event")
            loaded = await inbound.state.events(state.values(), rv)
            failure = auth_failure(event, {k: loaded[v] for k, v in state.items() if v in loaded})
            if failure is not None:
                raise PduError(f"the join does not pass the returned state: {failure}")
            head = self.hs.room_heads.peek(room_id) or await self.hs.room_heads.get(room_id)
            after = dict(state)
            after[event.key] = event.event_id
            group, chain = inbound.state.describe_group(room_id, after, None)
            old = {k: e.event_id for k, e in head.state.items()} if head else {}
            delta: dict = {k: (v, (event if v == event.event_id else loaded[v]).membership)
                           for k, v in after.items() if old.get(k) != v}
            delta.update({k: None for k in old if k not in after})
            row = event_row(event, group.id, group, None, apply_redaction=False)
            row.remote = RemoteRow(current_state_delta=delta,
                                   extremities_removed=list(head.extremities) if head else [])
            create = loaded[create_id]
            # On our side, the room belongs to the joining user's tenant (a federated one).
            row.new_room = (rv.identifier, create.sender, tenant)
            event.internal.update(redacted_by=None, unsigned=None)
            event.internal[NO_SEND] = True  # the resident server sends it on
            new_head = RoomHead(room_id=room_id, room_version=rv, state={}, extremities=[event.event_id],
                                depth=event.depth, state_group=group.id, chain_length=chain,
                                remote_tenant=head.remote_tenant if head is not None else (tenant,))
            for key, eid in after.items():
                new_head.apply_state(event if eid == event.event_id else loaded[eid])
            if head is not None:
                self.hs.room_heads.invalidate(room_id)
            self.hs.room_heads.add(new_head)
            self.hs.event_cache.put(event)
            await self.hs.persister.enqueue(row, event)
        logger.info("joined %s through %s (%d state events)", room_id, server, len(state))

    # ==== other membership changes of local users =====================================

    async def send_membership(self, head: RoomHead, sender: str, target: str, content: dict) -> Event | None:
        """Invites of other servers' users, and leaving a room known only through an
        invite; None: the ordinary local path applies."""
        membership = content.get("membership")
        if membership == "invite" and not self.hs.accounts.is_mine(target) and not is_stub(head):
            return await self.invite_remote(head, sender, target, content)
        if membership == "leave" and sender == target and is_stub(head):
            return await self.leave_stub(head, sender, content)
        return None

    async def invite_remote(self, head: RoomHead, inviter: str, invitee: str, content: dict) -> Event:
        if not self.federation.exposure.room_open(head):
            raise forbidden("this room's organization does not take part in federation")
        destination = server_of(invitee)
        if not self.federation.client.may_contact(destination):
            raise forbidden("federation with this server is not allowed")
        rv = head.room_version
        event = self.hs.event_creator.build(
            self.hs.event_creator.template(head, inviter, "m.room.member", content, invitee), rv)
        failure = auth_failure(event, head.state)
        if failure is not None:
            raise forbidden(failure)
        body = {"room_version": rv.identifier, "event": event.pdu,
                "invite_room_state": stripped_state(head, [head.state[("m.room.member", inviter)]]
                                                    if ("m.room.member", inviter) in head.state else [],
                                                    full=True)}
        try:
            answer = await self.federation.client.put(
                destination, path(F2 + "/invite/%s/%s", head.room_id, event.event_id), body)
        except FederationError as e:
            if e.status in (400, 403, 404):
                raise forbidden(f"the invitee's server refused the invite: {e.error}") from None
            raise MatrixError(502, "M_UNKNOWN", f"the invitee's server did not answer: {e.error}") from None
        signed = answer.get("event") if isinstance(answer, dict) else None
        try:
            signed_event, _ = parse_pdu(signed, rv)
        except PduFormatError:
            raise MatrixError(502, "M_UNKNOWN", "the invitee's server answered nonsense") from None
        if signed_event.event_id != event.event_id:
            raise MatrixError(502, "M_UNKNOWN", "the invitee's server changed the invite")
        await self.federation.keyring.verify_json(destination, _signed_part(signed_event), 0)
        event.pdu["signatures"] = signed_event.pdu["signatures"]
        inbound = self.federation.inbound
        async with inbound.lock(head.room_id):
            try:
                await inbound.accept(self.hs.server_name, head.room_id, rv, event)
            except PduError as e:
                raise forbidden(str(e)) from None
        return event

    async def leave_stub(self, head: RoomHead, user_id: str, content: dict) -> Event:
        """Decline an invite (or cancel a knock) of a room we are not in: make_leave and
        send_leave through the inviter's server, then record the leave here."""
        own = head.state.get(("m.room.member", user_id))
        servers = [server_of(own.sender)] if own is not None else []
        domain = split_id(head.room_id, "!")
        if domain is not None:
            servers.append(domain[1])
        client = self.federation.client
        last: Exception | None = None
        for server in [s for s in dict.fromkeys(servers) if s != self.hs.server_name]:
            try:
                made = await client.get(server, path(F1 + "/make_leave/%s/%s", head.room_id, user_id))
                rv = KNOWN_ROOM_VERSIONS.get(made.get("room_version", head.room_version.identifier))
                if rv is None:
                    raise FederationError(server, 0, "M_UNKNOWN", "bad make_leave answer")
                event = self._fill_template(made.get("event") or {}, rv, user_id, "leave", content)
                await client.put(server, path(F2 + "/send_leave/%s/%s", head.room_id, event.event_id), event.pdu)
                await self._store_stub_membership(head.room_id, rv, event, None)
                return event
            except FederationError as e:
                last = e
        # The inviting server cannot be reached: decline here at least.
        logger.info("could not tell the room's servers that %s declined: %s", user_id, last)
        rv = head.room_version
        pdu = {"room_id": head.room_id, "sender": user_id, "type": "m.room.member", "state_key": user_id,
               "content": {**content, "membership": "leave"}, "depth": head.depth + 1,
               "prev_events": [], "auth_events": [], "origin_server_ts": now_ms()}
        event = self.hs.event_creator.build(pdu, rv)
        await self._store_stub_membership(head.room_id, rv, event, None)
        return event


def _signed_part(event: Event) -> dict:
    from homeserver.redaction import prune_event_dict
    pruned = prune_event_dict(event.pdu, event.room_version)
    pruned.pop("unsigned", None)
    return pruned
