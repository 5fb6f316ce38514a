"""The whole life of a business on the bridge, driven by an ERP (a stand-in process that
receives and verifies the webhook) and by people in Matrix clients (matrix-nio, doing
what Element does): two tenants with the same order id, files both ways, edits,
deletions, reactions, threads, replies and leaving reaching the webhook in order, the
read-back routes, close and reopen, the summary, erasing a user, removing a tenant."""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
import sys
import time
import urllib.request
from urllib.parse import quote

import pytest
from nio import AsyncClient, LoginResponse, RoomSendResponse, UploadResponse
from PIL import Image

from tests.erp_bridge.harness import BridgeProcess
from tests.server_harness import REPO, Http, ServerProcess, free_port

SERVER = "test.local"


class ErpProcess:
    """tests/erp_bridge/erp_client.py in its own process."""

    def __init__(self, secret: str, port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.erp_bridge.erp_client",
                                      "--port", str(port), f"--secret={secret}"],  # (it may begin with "-")
                                     cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.http = Http(f"http://127.0.0.1:{port}")

    def received(self) -> dict:
        status, body = self.http.request("GET", "/deliveries")
        assert status == 200
        return body

    def of_room(self, room_id: str) -> list[dict]:
        return [d for d in self.received()["accepted"] if d["room"]["room_id"] == room_id]

    def wait_for(self, predicate, timeout: float = 30) -> list[dict]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.received()["accepted"]
            if predicate(got):
                return got
            time.sleep(0.1)
        raise AssertionError(f"webhook condition not met; got {json.dumps(self.received())[:3000]}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("life")
    erp_port = free_port()
    server = ServerProcess(tmp / "hs")
    bridge = BridgeProcess(tmp / "bridge", server, f"http://127.0.0.1:{erp_port}/hook")
    server.extra_config = f"app_service_config_files:\n  - {bridge.registration_path}\n"
    erp = ErpProcess(bridge.webhook_secret, erp_port)
    server.start()
    bridge.start()
    yield server, bridge, erp
    bridge.stop()
    erp.stop()
    server.stop()
    server.stop_postgres()


def tenant_with_order(erp: Http, unique, order: str, names=("anna", "ben")):
    tenant = unique("t")
    status, t = erp.request("PUT", f"/_erp/v1/tenants/{tenant}", {"name": tenant.upper()})
    assert status == 200, t
    users = {}
    for name in names:
        erp_id = unique(name)
        status, body = erp.request("PUT", f"/_erp/v1/tenants/{tenant}/users/{erp_id}",
                                   {"display_name": name.title(), "active": True})
        assert status == 200, body
        users[name] = (erp_id, body["user_id"])
    status, obj = erp.request("PUT", f"/_erp/v1/tenants/{tenant}/objects/order/{order}", {
        "title": f"Order {order}", "fields": {"customer": tenant},
        "participants": [u[0] for u in users.values()]})
    assert status == 200, obj
    return tenant, t, users, obj


async def nio_login(base_url: str, erp: Http, tenant: str, erp_user_id: str) -> AsyncClient:
    status, tok = erp.request("POST", f"/_erp/v1/tenants/{tenant}/users/{erp_user_id}/login-token", {})
    assert status == 200, tok
    client = AsyncClient(base_url)
    resp = await client.login(token=tok["login_token"], device_name="Element")
    assert isinstance(resp, LoginResponse), resp
    await client.sync(timeout=0)
    return client


def png_bytes(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def upload_raw(bridge: BridgeProcess, path: str, data: bytes, content_type: str, **query) -> tuple[int, dict]:
    url = bridge.base_url + path + "?" + "&".join(f"{k}={quote(v)}" for k, v in query.items())
    req = urllib.request.Request(url, data=data, method="POST", headers={
        "Authorization": f"Bearer {bridge.api_token}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def multipart(fields: dict[str, str], filename: str, content_type: str, data: bytes) -> tuple[bytes, str]:
    boundary = "----erpbridge" + hashlib.sha256(data).hexdigest()[:16]
    out = b""
    for k, v in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").encode()
    out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def fetch(url: str) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def test_two_tenants_same_order_id_are_walled(world, unique):
    server, bridge, _ = world
    erp = bridge.erp()
    order = "4711" + unique("x")
    a, ta, ua, obj_a = tenant_with_order(erp, unique, order)
    b, tb, ub, obj_b = tenant_with_order(erp, unique, order)
    assert obj_a["room_id"] != obj_b["room_id"] and obj_a["alias"] != obj_b["alias"]
    assert obj_a["alias"] == f"#_erp_obj.{a}.order.{order}:{SERVER}"
    # Messages go to the right room.
    status, ma = erp.request("POST", f"/_erp/v1/tenants/{a}/objects/order/{order}/messages",
                             {"body": "for A", "txn_id": "same"})
    status, mb = erp.request("POST", f"/_erp/v1/tenants/{b}/objects/order/{order}/messages",
                             {"body": "for B", "txn_id": "same"})
    assert ma["room_id"] == obj_a["room_id"] and mb["room_id"] == obj_b["room_id"]
    status, ha = erp.request("GET", f"/_erp/v1/tenants/{a}/objects/order/{order}/messages")
    assert [m["body"] for m in ha["chunk"]] == ["for A"]

    # An object, a user, of one tenant under another tenant's path: exactly like a missing one.
    only_b = unique("o")
    status, _ = erp.request("PUT", f"/_erp/v1/tenants/{b}/objects/order/{only_b}",
                            {"title": "B only", "participants": []})
    assert status == 200
    for suffix in ("", "/messages", "/summary"):
        s1, e1 = erp.request("GET", f"/_erp/v1/tenants/{a}/objects/order/{only_b}{suffix}")
        s2, e2 = erp.request("GET", f"/_erp/v1/tenants/{a}/objects/order/{unique('none')}{suffix}")
        assert (s1, e1["errcode"]) == (s2, e2["errcode"]) == (404, "M_NOT_FOUND")
        assert e1["error"].startswith("unknown order") and e2["error"].startswith("unknown order")
    for method, suffix, body in (("POST", "/messages", {"body": "x", "txn_id": "y"}),
                                 ("DELETE", "", None)):
        s1, e1 = erp.request(method, f"/_erp/v1/tenants/{a}/objects/order/{only_b}{suffix}", body)
        assert (s1, e1["errcode"]) == (404, "M_NOT_FOUND")
    ben_b = ub["ben"][0]
    s1, e1 = erp.request("GET", f"/_erp/v1/tenants/{a}/users/{ben_b}")
    s2, e2 = erp.request("DELETE", f"/_erp/v1/tenants/{a}/users/{ben_b}")
    s3, e3 = erp.request("POST", f"/_erp/v1/tenants/{a}/users/{ben_b}/login-token", {})
    assert {s1, s2, s3} == {404} and {e1["errcode"], e2["errcode"], e3["errcode"]} == {"M_NOT_FOUND"}
    # B's object is untouched (not closed by the DELETE under A's path).
    status, got = erp.request("GET", f"/_erp/v1/tenants/{b}/objects/order/{only_b}")
    assert status == 200 and got["state"] == "open"
    # The old tenant-less object routes are gone, and say where to go.
    status, body = erp.request("GET", f"/_erp/v1/objects/order/{order}/messages")
    assert status == 404 and "tenants/{tenant_id}/objects" in body["error"]

    # Lists, paginated.
    for i in range(3):
        erp.request("PUT", f"/_erp/v1/tenants/{a}/objects/ticket/T{i}", {"title": f"T{i}"})
    seen, token = [], None
    while True:
        path = f"/_erp/v1/tenants/{a}/objects?limit=2" + (f"&from={token}" if token else "")
        status, page = erp.request("GET", path)
        assert status == 200, page
        seen += [(o["object_type"], o["object_id"]) for o in page["chunk"]]
        token = page["next_from"]
        if not token:
            break
    assert seen == [("order", order), ("ticket", "T0"), ("ticket", "T1"), ("ticket", "T2")]
    status, page = erp.request("GET", f"/_erp/v1/tenants/{a}/objects?type=ticket&limit=10")
    assert [o["object_id"] for o in page["chunk"]] == ["T0", "T1", "T2"]
    status, page = erp.request("GET", f"/_erp/v1/tenants/{a}/users?limit=1")
    assert len(page["chunk"]) == 1 and page["next_from"]
    status, page2 = erp.request("GET", f"/_erp/v1/tenants/{a}/users?limit=5&from={page['next_from']}")
    assert {u["erp_user_id"] for u in page["chunk"] + page2["chunk"]} == {ua["anna"][0], ua["ben"][0]}
    status, err = erp.request("GET", f"/_erp/v1/tenants/{a}/objects?from=garbage!")
    assert status == 400 and err["errcode"] == "M_INVALID_PARAM"
    status, tenant_info = erp.request("GET", f"/_erp/v1/tenants/{a}")
    assert tenant_info["space_name"] == a.upper() and tenant_info["objects"] == {"open": 4}


def test_conversation_lifecycle(world, unique):
    server, bridge, hook = world
    erp = bridge.erp()
    order = "4711"
    tenant, t, users, obj = tenant_with_order(erp, unique, order)
    room = obj["room_id"]
    base = f"/_erp/v1/tenants/{tenant}/objects/order/{order}"
    anna, ben = users["anna"], users["ben"]
    image = png_bytes(37, 21)
    pdf = b"%PDF-1.4 fake pdf " + bytes(range(256)) * 40

    # ERP -> Matrix: a file as the raw body, another as multipart, and Markdown.
    status, img = upload_raw(bridge, base + "/attachments", image, "image/png",
                             filename="photo.png", txn_id="f1", sender=anna[0])
    assert status == 200, img
    status, again = upload_raw(bridge, base + "/attachments", image, "image/png",
                               filename="photo.png", txn_id="f1", sender=anna[0])
    assert again == img  # idempotent on txn_id
    body, ctype = multipart({"txn_id": "f2", "caption": "the invoice"}, "invoice.pdf", "application/pdf", pdf)
    status, doc = upload_raw(bridge, base + "/attachments", body, ctype)
    assert status == 200, doc
    status, md = erp.request("POST", base + "/messages", {
        "sender": anna[0], "body": "Price **confirmed**", "txn_id": "md1", "format": "markdown"})
    assert status == 200, md

    async def people() -> dict:
        out = {}
        client = await nio_login(server.base_url, erp, tenant, ben[0])
        # The ERP's files reach the person byte for byte, described as Element shows them.
        resp = await client.room_messages(room, start="", limit=20)
        by_id = {e.event_id: e for e in resp.chunk}
        ev_img, ev_doc, ev_md = by_id[img["event_id"]], by_id[doc["event_id"]], by_id[md["event_id"]]
        assert ev_img.source["content"]["msgtype"] == "m.image"
        assert ev_img.source["content"]["info"] == {"size": len(image), "mimetype": "image/png", "w": 37, "h": 21}
        assert ev_doc.source["content"]["msgtype"] == "m.file"
        assert ev_doc.source["content"]["body"] == "the invoice"
        assert ev_doc.source["content"]["filename"] == "invoice.pdf"
        assert ev_md.source["content"]["formatted_body"] == "<p>Price <strong>confirmed</strong></p>"
        for ev, data in ((ev_img, image), (ev_doc, pdf)):
            got = await client.download(mxc=ev.source["content"]["url"])
            assert got.body == data
        # Element's ways: a message, its edit, a reaction, a thread reply, a reply with
        # HTML, a file, taking the reaction back, deleting a message, leaving.
        m1 = await client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "hello"})
        assert isinstance(m1, RoomSendResponse), m1
        out["m1"] = m1.event_id
        out["edit"] = (await client.room_send(room, "m.room.message", {
            "msgtype": "m.text", "body": "* hello there",
            "m.new_content": {"msgtype": "m.text", "body": "hello there"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": m1.event_id}})).event_id
        out["react"] = (await client.room_send(room, "m.reaction", {"m.relates_to": {
            "rel_type": "m.annotation", "event_id": m1.event_id, "key": "👍"}})).event_id
        out["thread"] = (await client.room_send(room, "m.room.message", {
            "msgtype": "m.text", "body": "in a thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": m1.event_id, "is_falling_back": True,
                             "m.in_reply_to": {"event_id": m1.event_id}}})).event_id
        out["reply"] = (await client.room_send(room, "m.room.message", {
            "msgtype": "m.text", "body": "> hello\n\nreplying", "format": "org.matrix.custom.html",
            "formatted_body": "<mx-reply><blockquote>hello</blockquote></mx-reply>replying "
                              "<b>now</b><script>alert(1)</script>",
            "m.relates_to": {"m.in_reply_to": {"event_id": m1.event_id}}})).event_id
        up, _ = await client.upload(io.BytesIO(pdf), content_type="application/pdf",
                                    filename="from-ben.pdf", filesize=len(pdf))
        assert isinstance(up, UploadResponse), up
        out["file"] = (await client.room_send(room, "m.room.message", {
            "msgtype": "m.file", "body": "from-ben.pdf", "url": up.content_uri,
            "info": {"size": len(pdf), "mimetype": "application/pdf"}})).event_id
        out["unreact"] = (await client.room_redact(room, out["react"])).event_id
        out["gone"] = (await client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "oops"})).event_id
        # (A message deleted before the homeserver pushed it arrives as its deletion only.)
        hook.wait_for(lambda ds: any(d["event_id"] == out["gone"] for d in ds))
        out["delete"] = (await client.room_redact(room, out["gone"], reason="typo")).event_id
        await client.room_leave(room)
        await client.close()
        return out

    ids = asyncio.run(people())
    delivered = hook.wait_for(lambda ds: any(d["type"] == "io.erpchat.member.left" and d["room"]["room_id"] == room
                                             for d in ds))
    mine = [d for d in delivered if d["room"]["room_id"] == room]
    seqs = [d["sequence"] for d in mine]
    assert seqs == sorted(seqs)
    matrix_side = [(d["type"], d["event_id"]) for d in mine if d["sender"]["user_id"] == ben[1]
                   and d["type"] != "io.erpchat.member.joined"]
    assert matrix_side == [
        ("io.erpchat.message", ids["m1"]), ("io.erpchat.message.edit", ids["edit"]),
        ("io.erpchat.reaction.added", ids["react"]), ("io.erpchat.message", ids["thread"]),
        ("io.erpchat.message", ids["reply"]), ("io.erpchat.message", ids["file"]),
        ("io.erpchat.reaction.removed", ids["unreact"]), ("io.erpchat.message", ids["gone"]),
        ("io.erpchat.message.deletion", ids["delete"]), ("io.erpchat.member.left", mine[-1]["event_id"]),
    ]
    by_event = {d["event_id"]: d for d in mine}
    assert by_event[ids["edit"]]["edited_event_id"] == ids["m1"]
    assert by_event[ids["edit"]]["body"] == "hello there"
    assert by_event[ids["react"]]["key"] == "👍" and by_event[ids["react"]]["reacted_event_id"] == ids["m1"]
    assert by_event[ids["thread"]]["thread_root"] == ids["m1"]
    reply = by_event[ids["reply"]]
    assert reply["in_reply_to"] == ids["m1"] and reply["thread_root"] is None
    assert reply["formatted_body"] == "replying <b>now</b>"
    assert "script" not in json.dumps(reply)
    removed = by_event[ids["unreact"]]
    assert removed["reaction_event_id"] == ids["react"] and removed["key"] == "👍"
    assert by_event[ids["delete"]]["redacted_event_id"] == ids["gone"]
    left = mine[-1]
    assert left["member"]["erp_user_id"] == ben[0] and left["removed_by"] is None
    # ERP posts were delivered first, flagged as the ERP's; the person's join is there too.
    erp_posts = [d for d in mine if d["type"] == "io.erpchat.message"][:3]
    assert [d["event_id"] for d in erp_posts] == [img["event_id"], doc["event_id"], md["event_id"]]
    assert all(d["origin"] == "erp" for d in erp_posts)
    assert erp_posts[0]["attachment"]["size"] == len(image)
    assert any(d["type"] == "io.erpchat.member.joined" and d["member"]["user_id"] == ben[1] for d in mine)

    # The file ben shared downloads byte-identical through the link the webhook carried.
    att = by_event[ids["file"]]["attachment"]
    assert att["filename"] == "from-ben.pdf" and att["size"] == len(pdf)
    status, data, headers = fetch(att["url"])
    assert status == 200 and data == pdf and headers["Content-Type"].startswith("application/pdf")
    assert fetch(att["url"].replace("sig=", "sig=0"))[0] == 403
    other_tenant = att["url"].replace(f"/media/{tenant}/", f"/media/{unique('t')}/")
    assert fetch(other_tenant)[0] == 403

    # Read back: ben left by himself; the next PUT with the same list does not pull him back.
    put_body = {"title": f"Order {order}", "participants": [anna[0], ben[0]], "fields": {"customer": tenant}}
    status, _ = erp.request("PUT", base, put_body)
    status, got = erp.request("GET", base)
    assert status == 200
    parts = {p["erp_user_id"]: p for p in got["participants"]}
    assert parts[ben[0]]["membership"] == "leave" and parts[ben[0]]["left_by_themselves"]
    assert parts[anna[0]]["membership"] == "join"
    assert got["room_name"] == f"Order {order}" and got["fields"] == {"customer": tenant}
    assert {m["user_id"] for m in got["members"]} == {anna[1], f"@_erp_bot_{tenant}:{SERVER}"}
    # Listed anew (dropped, then listed again): back in.
    erp.request("PUT", base, {**put_body, "participants": [anna[0]]})
    erp.request("PUT", base, put_body)
    status, got = erp.request("GET", base)
    assert {p["erp_user_id"]: p["membership"] for p in got["participants"]} == {anna[0]: "join", ben[0]: "join"}

    # Summary for the ERP's screen.
    status, summary = erp.request("GET", base + "/summary?last=3")
    assert status == 200, summary
    assert summary["participant_count"] == 2
    # f1, f2, md1, m1, thread, reply, file (gone was deleted; the edit is no message)
    assert summary["message_count"] == 7
    assert summary["last_activity_ts"] > 0
    assert [t["root_event_id"] for t in summary["open_threads"]] == [ids["m1"]]
    assert summary["open_threads"][0]["reply_count"] == 1
    assert [m["event_id"] for m in summary["last_messages"]] == [ids["file"], ids["reply"], ids["thread"]]
    status, history = erp.request("GET", base + "/messages?limit=20")
    first = [m for m in history["chunk"] if m["event_id"] == ids["m1"]][0]
    assert first["body"] == "hello there" and first["edited"]  # the edit applied, not listed
    assert ids["edit"] not in {m["event_id"] for m in history["chunk"]}
    assert fetch([m for m in history["chunk"] if m["event_id"] == img["event_id"]][0]["attachment"]["url"])[1] == image

    # Close: read-only for people, history stays, the name says so; notices still go.
    status, closed = erp.request("DELETE", base)
    assert status == 200 and closed["state"] == "closed"
    status, got = erp.request("GET", base)
    assert got["state"] == "closed" and got["room_state"] == "closed"
    assert got["room_name"] == f"[Closed] Order {order}"
    status, err = erp.request("POST", base + "/messages", {"sender": anna[0], "body": "x", "txn_id": "c1"})
    assert status == 409, err
    status, _ = erp.request("POST", base + "/messages", {"body": "Order closed.", "txn_id": "c2"})
    assert status == 200

    async def try_send() -> bool:
        client = await nio_login(server.base_url, erp, tenant, anna[0])
        resp = await client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "still open?"})
        history = await client.room_messages(room, start="", limit=50)
        await client.close()
        assert len(history.chunk) > 10  # history stays readable
        return isinstance(resp, RoomSendResponse)

    assert not asyncio.run(try_send())
    status, reopened = erp.request("PUT", base, {**put_body, "state": "open"})
    assert status == 200 and reopened["state"] == "open"
    assert asyncio.run(try_send())
    status, got = erp.request("GET", base)
    assert got["room_name"] == f"Order {order}" and got["state"] == "open"

    # Erase ben: deactivated, profile gone, everything he sent redacted.
    status, gone = erp.request("DELETE", f"/_erp/v1/tenants/{tenant}/users/{ben[0]}", {"erase": True})
    assert status == 200, gone
    assert gone["erased"] and gone["redacted_events"] >= 8
    status, again = erp.request("DELETE", f"/_erp/v1/tenants/{tenant}/users/{ben[0]}", {"erase": True})
    assert status == 200 and again["redacted_events"] == 0  # repeatable, nothing twice
    status, info = erp.request("GET", f"/_erp/v1/tenants/{tenant}/users/{ben[0]}")
    assert info["state"] == "deleted" and info["erased"] and info["display_name"] is None
    status, _ = erp.request("POST", f"/_erp/v1/tenants/{tenant}/users/{ben[0]}/login-token", {})
    assert status == 403
    status, _ = erp.request("PUT", f"/_erp/v1/tenants/{tenant}/users/{ben[0]}",
                            {"display_name": "Ben", "active": True})
    assert status == 409
    hs, bot = bridge.as_client(), f"@_erp_bot_{tenant}:{SERVER}"
    status, page = hs.as_user("GET", f"/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b&limit=100", bot)
    bens = [e for e in page["chunk"] if e["sender"] == ben[1] and e["type"] != "m.room.redaction"]
    assert bens and all(not e["content"] or set(e["content"]) == {"membership"} for e in bens)
    status, profile = hs.as_user("GET", f"/_matrix/client/v3/profile/{quote(ben[1])}", bot)
    assert status == 404 or not profile.get("displayname")
    hook.wait_for(lambda ds: any(d["type"] == "io.erpchat.message.deletion" and d.get("redacted_event_id") == ids["m1"]
                                 for d in ds))


def test_remove_tenant(world, unique):
    server, bridge, _ = world
    erp = bridge.erp()
    tenant, t, users, obj = tenant_with_order(erp, unique, "1")
    status, body = erp.request("DELETE", f"/_erp/v1/tenants/{tenant}")
    assert status == 200 and body["state"] == "removed"
    status, info = erp.request("GET", f"/_erp/v1/tenants/{tenant}")
    assert info["state"] == "removed" and info["users"] == {"deleted": 2} and info["objects"] == {"closed": 1}
    status, got = erp.request("GET", f"/_erp/v1/tenants/{tenant}/objects/order/1")
    assert got["room_state"] == "closed" and got["members"] == [
        {"user_id": f"@_erp_bot_{tenant}:{SERVER}", "erp_user_id": None, "membership": "join"}]
    hs = bridge.as_client()
    status, whoami = hs.as_user("GET", "/_matrix/client/v3/account/whoami", users["anna"][1])
    assert status == 403  # the account is deactivated
    # Read-only from now on; repeating the removal is harmless.
    status, err = erp.request("PUT", f"/_erp/v1/tenants/{tenant}/objects/order/2", {"title": "x"})
    assert status == 409
    status, err = erp.request("PUT", f"/_erp/v1/tenants/{tenant}", {"name": "again"})
    assert status == 409
    status, body = erp.request("DELETE", f"/_erp/v1/tenants/{tenant}")
    assert status == 200
