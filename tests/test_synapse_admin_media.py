"""Synapse's media admin API on a real server: a user's media (list, order, paging,
delete), the media a room's events name, quarantine by id, room and user (and undoing it),
protection from quarantine, query, delete by id and by date/size, the remote cache purge;
quarantined media is not served; a deleted file leaves the disk only with the last media
row of its content (thumbnails too); every change is in the audit log; and the tenant
walls: a tenant admin reaches only their tenant's media, anything else answers exactly
like media that does not exist."""
from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg2
import pytest

from tests.media_client import SERVER_NAME, V1, get, image_bytes, upload_ok
from tests.server_harness import Http
from tests.tenant_world import V3, create_room, running_world

A1 = "/_synapse/admin/v1"
THUMB = "?width=32&height=32&method=crop"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with running_world(tmp_path_factory.mktemp("media-admin")) as w:
        yield w, {"alice": w.user("alice", "acme"), "carol": w.user("carol", "acme"),
                  "tadmin": w.tenant_admin("tadmin", "acme"), "bob": w.user("bob", "globex"),
                  "nadia": w.user("nadia", None)}


def _sql(w, query: str, args: tuple = ()) -> list[tuple]:
    with psycopg2.connect(w.srv.dsn()) as conn, conn.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchall()


def _content_file(w, data: bytes) -> Path:
    sha = hashlib.sha256(data).hexdigest()
    return w.srv.data_dir / "media" / "content" / sha[:2] / sha[2:4] / sha


def _thumbnail_dir(w, data: bytes) -> Path:
    sha = hashlib.sha256(data).hexdigest()
    return w.srv.data_dir / "media" / "thumbnails" / sha[:2] / sha[2:4] / sha


def _fetch(w, user: Http, media_id: str, thumbnail: bool = False) -> tuple[int, object]:
    path = f"{V1}/thumbnail/{SERVER_NAME}/{media_id}{THUMB}" if thumbnail else f"{V1}/download/{SERVER_NAME}/{media_id}"
    status, _, body = get(user, path, base=w.srv.base_url)
    return status, (body if status == 200 else json.loads(body))


def _audit(w, action: str, since_id: int) -> list[tuple]:
    """(actor, target user, target room, tenant, details) of the entries after `since_id`."""
    rows = _sql(w, "SELECT actor, target_user, target_room, tenant_id, details FROM audit_log"
                   " WHERE action = %s AND id > %s ORDER BY id", (action, since_id))
    return [(*row[:4], json.loads(row[4]) if isinstance(row[4], str) else row[4]) for row in rows]


def _last_audit_id(w) -> int:
    return _sql(w, "SELECT COALESCE(max(id), 0) FROM audit_log")[0][0]


def test_non_admins_are_refused(world):
    w, u = world
    media_id = upload_ok(u["alice"], b"mine")
    for method, path in (("GET", f"/users/{u['alice'].user_id}/media"), ("GET", f"/media/{SERVER_NAME}/{media_id}"),
                         ("POST", f"/media/quarantine/{SERVER_NAME}/{media_id}"),
                         ("DELETE", f"/media/{SERVER_NAME}/{media_id}"), ("POST", "/media/delete?before_ts=1")):
        status, body = u["alice"].request(method, A1 + path)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), path
    assert _fetch(w, u["alice"], media_id) == (200, b"mine")


def test_list_a_users_media_order_and_paging(world):
    w, u = world
    carol = u["carol"]
    ids = [upload_ok(carol, b"x" * size, "text/plain", name) for size, name in ((30, "b.txt"), (10, "c.txt"),
                                                                                (20, "a.txt"))]
    status, body = w.admin.request("GET", f"{A1}/users/{carol.user_id}/media")
    assert status == 200 and body["total"] == 3 and "next_token" not in body
    assert [m["media_id"] for m in body["media"]] == ids[::-1]  # newest first by default
    first = body["media"][0]
    assert first == {"media_id": ids[2], "media_type": "text/plain", "media_length": 20, "upload_name": "a.txt",
                     "created_ts": first["created_ts"], "url_cache": None, "last_access_ts": None,
                     "quarantined_by": None, "safe_from_quarantine": False, "user_id": carol.user_id,
                     "authenticated": True, "sha256": hashlib.sha256(b"x" * 20).hexdigest()}
    assert _sql(w, "SELECT created_ts FROM local_media WHERE media_id = %s", (ids[2],)) == [(first["created_ts"],)]
    _, by_size = w.admin.request("GET", f"{A1}/users/{carol.user_id}/media?order_by=media_length")
    assert [m["media_length"] for m in by_size["media"]] == [10, 20, 30]  # dir defaults to f once order_by is set
    _, by_name = w.admin.request("GET", f"{A1}/users/{carol.user_id}/media?order_by=upload_name&dir=b")
    assert [m["upload_name"] for m in by_name["media"]] == ["c.txt", "b.txt", "a.txt"]
    _, page = w.admin.request("GET", f"{A1}/users/{carol.user_id}/media?limit=2&order_by=created_ts")
    assert [m["media_id"] for m in page["media"]] == ids[:2] and page["next_token"] == 2
    _, rest = w.admin.request("GET", f"{A1}/users/{carol.user_id}/media?limit=2&from=2&order_by=created_ts")
    assert [m["media_id"] for m in rest["media"]] == ids[2:] and "next_token" not in rest
    # A download counts as an access at once (before the batch is written).
    assert _fetch(w, carol, ids[0])[0] == 200
    _, after = w.admin.request("GET", f"{A1}/users/{carol.user_id}/media?order_by=created_ts")
    assert abs(after["media"][0]["last_access_ts"] - time.time() * 1000) < 10_000
    for bad in ("order_by=nonsense", "dir=x", "from=-1", "limit=x"):
        status, err = w.admin.request("GET", f"{A1}/users/{carol.user_id}/media?{bad}")
        assert (status, err["errcode"]) == (400, "M_INVALID_PARAM"), bad
    assert w.admin.request("GET", f"{A1}/users/@ghost:{SERVER_NAME}/media")[0] == 404
    assert w.admin.request("GET", f"{A1}/users/@x:elsewhere.org/media")[0] == 400


def test_query_media(world):
    w, u = world
    media_id = upload_ok(u["alice"], b"query me", "text/plain", "q.txt")
    status, body = w.admin.request("GET", f"{A1}/media/{SERVER_NAME}/{media_id}")
    assert status == 200
    info = body["media_info"]
    assert info["media_origin"] is None and info["user_id"] == u["alice"].user_id and info["media_id"] == media_id
    assert (info["media_type"], info["media_length"], info["upload_name"]) == ("text/plain", 8, "q.txt")
    assert info["sha256"] == hashlib.sha256(b"query me").hexdigest() and info["filesystem_id"] is None
    missing = w.admin.request("GET", f"{A1}/media/{SERVER_NAME}/NoSuchMediaId")
    assert missing == (404, {"errcode": "M_NOT_FOUND", "error": "Unknown media"})
    assert w.admin.request("GET", f"{A1}/media/elsewhere.org/{media_id}") == missing  # no remote cache


def test_quarantine_by_id_stops_serving_every_copy(world):
    w, u = world
    alice, carol = u["alice"], u["carol"]
    png = image_bytes((120, 80))
    first, copy = upload_ok(alice, png, "image/png"), upload_ok(carol, png, "image/png")
    assert _fetch(w, alice, first) == (200, png) and _fetch(w, alice, first, thumbnail=True)[0] == 200
    since = _last_audit_id(w)
    assert w.admin.request("POST", f"{A1}/media/quarantine/{SERVER_NAME}/{first}", {}) == (200, {})
    # The same content uploaded again is quarantined with it (the file is one file).
    assert set(_sql(w, "SELECT media_id, quarantined_by FROM local_media WHERE media_id IN (%s, %s)",
                    (first, copy))) == {(first, f"@admin:{SERVER_NAME}"), (copy, f"@admin:{SERVER_NAME}")}
    missing = _fetch(w, alice, "NoSuchMediaId")
    assert missing[0] == 404 and missing[1]["errcode"] == "M_NOT_FOUND"
    for media_id in (first, copy):
        assert _fetch(w, alice, media_id) == missing
        assert _fetch(w, alice, media_id, thumbnail=True) == missing
    assert _content_file(w, png).exists() and _thumbnail_dir(w, png).exists()  # nothing deleted
    _, info = w.admin.request("GET", f"{A1}/media/{SERVER_NAME}/{copy}")
    assert info["media_info"]["quarantined_by"] == f"@admin:{SERVER_NAME}"
    [(actor, _, _, tenant, details)] = _audit(w, "media.quarantine", since)
    assert (actor, tenant, details["media_id"], details["changed"]) == (f"@admin:{SERVER_NAME}", "acme", first, 2)
    assert w.admin.request("POST", f"{A1}/media/unquarantine/{SERVER_NAME}/{first}", {}) == (200, {})
    assert _sql(w, "SELECT count(*) FROM local_media WHERE media_id IN (%s, %s) AND quarantined_by IS NOT NULL",
                (first, copy)) == [(0,)]
    assert _fetch(w, carol, copy) == (200, png)
    assert len(_audit(w, "media.unquarantine", since)) == 1
    # Unknown media: {} as Synapse answers, and nothing changes.
    assert w.admin.request("POST", f"{A1}/media/quarantine/{SERVER_NAME}/NoSuchMediaId", {}) == (200, {})
    assert w.admin.request("POST", f"{A1}/media/quarantine/elsewhere.org/{first}") == (200, {})  # no body needed
    assert _fetch(w, alice, first) == (200, png)


def test_protected_media_is_not_quarantined(world):
    w, _ = world
    alice = w.user("pia", "acme")
    sticker, other = upload_ok(alice, b"sticker pack", "text/plain"), upload_ok(alice, b"other", "text/plain")
    assert w.admin.request("POST", f"{A1}/media/protect/{sticker}") == (200, {})
    assert _sql(w, "SELECT safe_from_quarantine FROM local_media WHERE media_id = %s", (sticker,)) == [(True,)]
    assert w.admin.request("POST", f"{A1}/media/quarantine/{SERVER_NAME}/{sticker}", {}) == (200, {})
    _, counted = w.admin.request("POST", f"{A1}/user/{alice.user_id}/media/quarantine", {})
    assert _sql(w, "SELECT quarantined_by FROM local_media WHERE media_id = %s", (sticker,)) == [(None,)]
    assert _sql(w, "SELECT quarantined_by FROM local_media WHERE media_id = %s", (other,)) == [
        (f"@admin:{SERVER_NAME}",)]
    assert counted == {"num_quarantined": 1}
    assert _fetch(w, alice, sticker) == (200, b"sticker pack") and _fetch(w, alice, other)[0] == 404
    assert w.admin.request("POST", f"{A1}/media/unprotect/{sticker}", {}) == (200, {})
    assert w.admin.request("POST", f"{A1}/media/quarantine/{SERVER_NAME}/{sticker}", {}) == (200, {})
    assert _fetch(w, alice, sticker)[0] == 404
    missing = w.admin.request("POST", f"{A1}/media/protect/NoSuchMediaId", {})
    assert missing == (404, {"errcode": "M_NOT_FOUND", "error": "Unknown media"})


def test_media_of_a_room_and_of_a_user(world):
    w, u = world
    alice, carol = u["alice"], u["carol"]
    room = create_room(alice, preset="public_chat")
    assert carol.request("POST", f"{V3}/rooms/{room}/join", {})[0] == 200
    image, thumb, file = (upload_ok(alice, b"image"), upload_ok(alice, b"thumb"), upload_ok(carol, b"file"))
    for txn, content in enumerate((
            {"msgtype": "m.image", "body": "i.png", "url": f"mxc://{SERVER_NAME}/{image}",
             "info": {"thumbnail_url": f"mxc://{SERVER_NAME}/{thumb}"}},
            {"msgtype": "m.file", "body": "f", "url": f"mxc://{SERVER_NAME}/{file}"},
            {"msgtype": "m.image", "body": "remote", "url": "mxc://elsewhere.org/RemoteId"},
            {"msgtype": "m.text", "body": f"just text naming mxc://{SERVER_NAME}/NotAnAttachment"})):
        sender = carol if content["msgtype"] == "m.file" else alice
        assert sender.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/m{txn}", content)[0] == 200
    status, listed = w.admin.request("GET", f"{A1}/room/{room}/media")
    assert status == 200
    assert sorted(listed["local"]) == sorted(f"mxc://{SERVER_NAME}/{m}" for m in (image, thumb, file))
    assert listed["remote"] == ["mxc://elsewhere.org/RemoteId"]
    since = _last_audit_id(w)
    assert w.admin.request("POST", f"{A1}/room/{room}/media/quarantine", {}) == (200, {"num_quarantined": 3})
    assert {m for (m,) in _sql(w, "SELECT media_id FROM local_media WHERE quarantined_by = %s AND media_id"
                                  " IN (%s, %s, %s)", (f"@admin:{SERVER_NAME}", image, thumb, file))} == \
        {image, thumb, file}
    [(_, _, target_room, tenant, details)] = _audit(w, "media.quarantine", since)
    assert (target_room, tenant, details["num_quarantined"]) == (room, "acme", 3)
    # Already quarantined: nothing more to count.
    assert w.admin.request("POST", f"{A1}/quarantine_media/{room}", {}) == (200, {"num_quarantined": 0})
    # A room that does not exist names no media (as Synapse: not a 404).
    assert w.admin.request("GET", f"{A1}/room/!nope:{SERVER_NAME}/media") == (200, {"local": [], "remote": []})
    assert w.admin.request("GET", f"{A1}/room/nonsense/media")[0] == 400
    # A user's media.
    fresh = w.user("quinn", "acme")
    mine = [upload_ok(fresh, data) for data in (b"q1", b"q2")]
    assert w.admin.request("POST", f"{A1}/user/{fresh.user_id}/media/quarantine", {}) == (
        200, {"num_quarantined": 2})
    assert _sql(w, "SELECT count(*) FROM local_media WHERE user_id = %s AND quarantined_by IS NOT NULL",
                (fresh.user_id,)) == [(2,)]
    assert all(_fetch(w, fresh, m)[0] == 404 for m in mine)
    assert w.admin.request("POST", f"{A1}/user/@ghost:{SERVER_NAME}/media/quarantine", {}) == (
        200, {"num_quarantined": 0})


def test_delete_removes_the_file_with_the_last_row_naming_it(world):
    w, u = world
    alice, bob = u["alice"], u["bob"]
    png = image_bytes((90, 60))
    mine, theirs = upload_ok(alice, png, "image/png"), upload_ok(bob, png, "image/png")  # one file, two tenants
    assert _fetch(w, alice, mine, thumbnail=True)[0] == 200
    sha = hashlib.sha256(png).hexdigest()
    assert _sql(w, "SELECT count(*) FROM media_thumbnails WHERE sha256 = %s", (sha,))[0][0] >= 1
    since = _last_audit_id(w)
    assert w.admin.request("DELETE", f"{A1}/media/{SERVER_NAME}/{mine}") == (
        200, {"deleted_media": [mine], "total": 1})
    assert _sql(w, "SELECT count(*) FROM local_media WHERE media_id = %s", (mine,)) == [(0,)]
    assert _fetch(w, alice, mine)[0] == 404
    # bob's row still names the content: the file and thumbnails stay and are served.
    assert _content_file(w, png).exists() and _thumbnail_dir(w, png).exists()
    assert _fetch(w, bob, theirs) == (200, png) and _fetch(w, bob, theirs, thumbnail=True)[0] == 200
    assert w.admin.request("DELETE", f"{A1}/media/{SERVER_NAME}/{theirs}")[1]["total"] == 1
    assert not _content_file(w, png).exists() and not _thumbnail_dir(w, png).exists()
    assert _sql(w, "SELECT count(*) FROM media_thumbnails WHERE sha256 = %s", (sha,)) == [(0,)]
    entries = _audit(w, "media.delete", since)
    assert [(e[3], e[4]["deleted_media"]) for e in entries] == [("acme", [mine]), ("globex", [theirs])]
    # The same bytes uploaded afresh get their file back.
    again = upload_ok(alice, png, "image/png")
    assert _fetch(w, alice, again) == (200, png) and _content_file(w, png).exists()
    assert w.admin.request("DELETE", f"{A1}/media/{SERVER_NAME}/{mine}") == (
        404, {"errcode": "M_NOT_FOUND", "error": "Unknown media"})
    status, err = w.admin.request("DELETE", f"{A1}/media/elsewhere.org/{again}")
    assert (status, err["error"]) == (400, "Can only delete local media")


@contextmanager
def _content_lock_held(w, data: bytes) -> Iterator[None]:
    """Hold the lock a process takes on some content (storage.media.lock_content) while it
    places or removes its files, as another process of the deployment would."""
    conn = psycopg2.connect(w.srv.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                        ("media-content:" + hashlib.sha256(data).hexdigest(),))
        yield
    finally:
        conn.rollback()
        conn.close()


def _still_waiting(*pending: Future) -> bool:
    time.sleep(1.0)
    return not any(f.done() for f in pending)


def test_files_of_content_wait_for_its_lock_held_by_another_process(world):
    """What orders an upload of some bytes against the removal of their file when the two
    run in different processes: the content's lock in PostgreSQL. While another process
    holds it (here the test), thumbnails, deletions and uploads of that content wait; an
    upload arriving while the last row naming the content is deleted keeps a served file."""
    w, u = world
    alice, carol = u["alice"], u["carol"]
    png = image_bytes((77, 41))
    first = upload_ok(alice, png, "image/png")
    with ThreadPoolExecutor(2) as pool:
        with _content_lock_held(w, png):
            thumbnail = pool.submit(_fetch, w, alice, first, True)
            assert _still_waiting(thumbnail), "the thumbnail was placed under another process's lock"
        assert thumbnail.result(30)[0] == 200 and _thumbnail_dir(w, png).exists()

        with _content_lock_held(w, png):
            deletion = pool.submit(w.admin.request, "DELETE", f"{A1}/media/{SERVER_NAME}/{first}")
            time.sleep(0.3)  # the deletion comes first: it waits to decide on the file
            upload = pool.submit(upload_ok, carol, png, "image/png")
            assert _still_waiting(deletion, upload), "a file was placed or removed under another process's lock"
        assert deletion.result(30) == (200, {"deleted_media": [first], "total": 1})
        again = upload.result(30)
    assert _fetch(w, alice, first)[0] == 404
    assert _fetch(w, carol, again) == (200, png) and _content_file(w, png).exists()
    assert _fetch(w, carol, again, thumbnail=True)[0] == 200


def test_delete_a_users_media(world):
    w, u = world
    fresh = w.user("rita", "acme")
    ids = [upload_ok(fresh, f"rita {i}".encode()) for i in range(3)]
    status, body = w.admin.request("DELETE", f"{A1}/users/{fresh.user_id}/media?limit=2")
    assert status == 200 and sorted(body["deleted_media"]) == sorted(ids[1:]) and body["total"] == 2  # newest first
    assert _sql(w, "SELECT media_id FROM local_media WHERE user_id = %s", (fresh.user_id,)) == [(ids[0],)]
    assert not _content_file(w, b"rita 2").exists() and _content_file(w, b"rita 0").exists()
    assert w.admin.request("DELETE", f"{A1}/users/{fresh.user_id}/media")[1] == {"deleted_media": [ids[0]],
                                                                                  "total": 1}
    assert w.admin.request("DELETE", f"{A1}/users/{fresh.user_id}/media")[1] == {"deleted_media": [], "total": 0}


def test_delete_old_media_by_date_and_size(world):
    """In a tenant of its own, deleted by that tenant's admin: media of other tenants
    (older than the cut-off too) stays."""
    w, u = world
    owner, tadmin = w.user("olga", "initech"), w.tenant_admin("ivan", "initech")
    acme_old = upload_ok(u["alice"], b"acme, older than the cut-off" * 100)
    small, big, used, avatar = (upload_ok(owner, data) for data in (
        b"small", b"big" * 1000, b"used lately" * 1000, b"avatar" * 1000))
    quarantined, protected = upload_ok(owner, b"quarantined" * 1000), upload_ok(owner, b"protected" * 1000)
    assert tadmin.request("POST", f"{A1}/media/quarantine/{SERVER_NAME}/{quarantined}", {})[0] == 200
    assert tadmin.request("POST", f"{A1}/media/protect/{protected}", {})[0] == 200
    assert owner.request("PUT", f"{V3}/profile/{owner.user_id}/avatar_url",
                         {"avatar_url": f"mxc://{SERVER_NAME}/{avatar}"})[0] == 200
    time.sleep(0.05)
    cut_off = int(time.time() * 1000)
    time.sleep(0.05)
    assert _fetch(w, owner, used)[0] == 200  # accessed after the cut-off: kept
    status, body = tadmin.request("POST", f"{A1}/media/delete?before_ts={cut_off}&size_gt=100")
    assert status == 200 and body == {"deleted_media": [big], "total": 1}
    assert set(_sql(w, "SELECT media_id FROM local_media WHERE media_id = ANY(%s)",
                    ([acme_old, small, big, used, avatar, quarantined, protected],))) == {
        (m,) for m in (acme_old, small, used, avatar, quarantined, protected)}
    assert _sql(w, "SELECT last_access_ts > %s FROM local_media WHERE media_id = %s", (cut_off, used)) == [(True,)]
    # keep_profiles=false lets the avatar go; the legacy path with our server name works too.
    status, body = tadmin.request("POST", f"{A1}/media/{SERVER_NAME}/delete?before_ts={cut_off}&keep_profiles=false")
    assert status == 200 and sorted(body["deleted_media"]) == sorted([small, avatar])
    assert not _content_file(w, b"avatar" * 1000).exists()
    assert _sql(w, "SELECT count(*) FROM local_media WHERE media_id = %s", (acme_old,)) == [(1,)]
    for bad, errcode in (("", "M_MISSING_PARAM"), ("?before_ts=1000", "M_INVALID_PARAM"),
                         ("?before_ts=x", "M_INVALID_PARAM"),
                         (f"?before_ts={cut_off}&size_gt=-1", "M_INVALID_PARAM"),
                         (f"?before_ts={cut_off}&keep_profiles=maybe", "M_INVALID_PARAM")):
        status, err = tadmin.request("POST", f"{A1}/media/delete{bad}")
        assert (status, err["errcode"]) == (400, errcode), bad
    assert tadmin.request("POST", f"{A1}/media/elsewhere.org/delete?before_ts={cut_off}")[0] == 400


def test_purge_remote_media_cache(world):
    w, u = world
    assert w.admin.request("POST", f"{A1}/purge_media_cache?before_ts={int(time.time() * 1000)}", {}) == (
        200, {"deleted": 0})
    assert w.admin.request("POST", f"{A1}/purge_media_cache", {})[1]["errcode"] == "M_MISSING_PARAM"
    assert u["tadmin"].request("POST", f"{A1}/purge_media_cache?before_ts={int(time.time() * 1000)}")[0] == 403


def test_tenant_admin_reaches_only_their_tenants_media(world):
    w, u = world
    tadmin, alice, bob, nadia = u["tadmin"], u["alice"], u["bob"], u["nadia"]
    png = image_bytes((64, 64))
    globex = upload_ok(bob, png, "image/png")
    unowned = upload_ok(nadia, b"no tenant")
    acme = upload_ok(alice, b"acme's own")
    globex_room = create_room(bob, preset="public_chat")
    assert bob.request("PUT", f"{V3}/rooms/{globex_room}/send/m.room.message/g", {
        "msgtype": "m.image", "body": "x", "url": f"mxc://{SERVER_NAME}/{globex}"})[0] == 200
    gone_id, gone_room, gone_user = "NoSuchMediaIdAtAll", f"!nothere:{SERVER_NAME}", f"@nobody:{SERVER_NAME}"

    def same(method: str, real: str, missing: str) -> None:
        assert tadmin.request(method, A1 + real, {}) == tadmin.request(method, A1 + missing, {}), real

    for other in (globex, unowned):
        for method, path in (("GET", "/media/{s}/{m}"), ("POST", "/media/quarantine/{s}/{m}"),
                             ("POST", "/media/unquarantine/{s}/{m}"), ("POST", "/media/protect/{m}"),
                             ("POST", "/media/unprotect/{m}"), ("DELETE", "/media/{s}/{m}")):
            same(method, path.format(s=SERVER_NAME, m=other), path.format(s=SERVER_NAME, m=gone_id))
    for method, path in (("GET", "/users/{u}/media"), ("DELETE", "/users/{u}/media"),
                         ("POST", "/user/{u}/media/quarantine")):
        same(method, path.format(u=bob.user_id), path.format(u=gone_user))
    for method, path in (("GET", "/room/{r}/media"), ("POST", "/room/{r}/media/quarantine")):
        same(method, path.format(r=globex_room), path.format(r=gone_room))
    # Within the tenant it works.
    assert tadmin.request("GET", f"{A1}/media/{SERVER_NAME}/{acme}")[1]["media_info"]["user_id"] == alice.user_id
    assert tadmin.request("DELETE", f"{A1}/media/{SERVER_NAME}/{acme}")[1] == {"deleted_media": [acme], "total": 1}
    # Nothing of the other tenant changed, and a delete by date left it alone.
    assert tadmin.request("POST", f"{A1}/media/delete?before_ts={int(time.time() * 1000) + 1000}")[0] == 200
    assert set(_sql(w, "SELECT media_id, quarantined_by, safe_from_quarantine FROM local_media"
                       " WHERE media_id = ANY(%s)", ([globex, unowned],))) == {(globex, None, False),
                                                                             (unowned, None, False)}
    assert _fetch(w, bob, globex) == (200, png) and _content_file(w, png).exists()
    _, listed = w.admin.request("GET", f"{A1}/room/{globex_room}/media")
    assert listed["local"] == [f"mxc://{SERVER_NAME}/{globex}"]
    # The tenant admin's audit entries carry their own tenant, not the one they named.
    assert not _sql(w, "SELECT 1 FROM audit_log WHERE actor = %s AND tenant_id IS DISTINCT FROM 'acme'",
                    (tadmin.user_id,))
