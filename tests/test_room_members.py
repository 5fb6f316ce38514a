"""GET /rooms/{roomId}/members as history visibility allows it: a past member sees the
member list as it was when they left, not who joined after."""
from __future__ import annotations

from tests.server_harness import new_user
from tests.tenant_world import joined_room

V3 = "/_matrix/client/v3"


def test_past_member_cannot_see_members_after_leaving(server, unique):
    A, B = new_user(server.base_url, unique("a")), new_user(server.base_url, unique("b"))
    room_id = joined_room(A, B, invite=False, preset="public_chat")
    assert B.request("POST", f"{V3}/rooms/{room_id}/leave", {})[0] == 200
    C = new_user(server.base_url, unique("c"))
    assert C.request("POST", f"{V3}/rooms/{room_id}/join", {})[0] == 200
    for path in (f"{V3}/rooms/{room_id}/members", f"{V3}/rooms/{room_id}/members?at=s999999999"):
        status, members = B.request("GET", path)
        assert status == 200
        assert C.user_id not in {e["state_key"] for e in members["chunk"]}
