"""A first end-to-end check over raw HTTP: register, create a room, send, read back."""


def test_register_create_send_read(server, http, unique):
    alice = http.register(unique("alice"))
    http.token = alice["access_token"]
    status, room = http.request("POST", "/_matrix/client/v3/createRoom", {"name": "smoke"})
    assert status == 200, room
    status, sent = http.request(
        "PUT", f"/_matrix/client/v3/rooms/{room['room_id']}/send/m.room.message/t1",
        {"msgtype": "m.text", "body": "hello"})
    assert status == 200, sent
    status, page = http.request(
        "GET", f"/_matrix/client/v3/rooms/{room['room_id']}/messages?dir=b&limit=5")
    assert status == 200
    assert page["chunk"][0]["event_id"] == sent["event_id"]
    assert page["chunk"][0]["content"]["body"] == "hello"
