"""Pure parts of the ERP bridge: signing, config, request bodies, ids, registration."""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json

import pytest
import yaml
from pydantic import ValidationError

from appservice.erp_bridge import webhook
from appservice.erp_bridge.config import (
    ConfigError, fill_missing_secrets, generate_config_text, load_config, parse_config)
from appservice.erp_bridge.ids import Ids, encode_localpart, is_erp_id, is_object_type
from appservice.erp_bridge.models import MessageBody, ObjectBody, TenantBody, UserBody
from appservice.erp_bridge.provisioning import homeserver_txn_id, request_hash
from appservice.erp_bridge.registration import registration
from appservice.erp_bridge.media_links import MediaLinks

SECRETS = {"appservice": {"as_token": "a" * 20, "hs_token": "h" * 20},
           "erp": {"api_token": "e" * 20}}


# ---- HMAC signing ----------------------------------------------------------------------

def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"b":1,"a":"\xc3\xa9"}'
    expected = hmac.new(b"s3cret", b"1760000000." + body, hashlib.sha256).hexdigest()
    assert webhook.sign("s3cret", 1760000000, body) == f"t=1760000000,v1={expected}"


def test_verify_rejects_tampering_wrong_key_and_replays():
    body = b'{"x":1}'
    now = 1_760_000_000
    header = webhook.sign("k1", now, body)
    assert webhook.verify("k1", body, header, now=now)
    assert webhook.verify("k1", body, header, now=now + 299)
    assert not webhook.verify("k1", body, header, now=now + 301)  # a replay, too late
    assert not webhook.verify("k1", body + b" ", header, now=now)
    assert not webhook.verify("k2", body, header, now=now)
    assert not webhook.verify("k1", body, None, now=now)
    assert not webhook.verify("k1", body, "t=x,v1=00", now=now)
    # The timestamp is signed: moving it forward breaks the signature.
    forged = header.replace(f"t={now}", f"t={now + 200}")
    assert not webhook.verify("k1", body, forged, now=now + 200)


def test_backoff_doubles_and_caps():
    delays = list(itertools.islice(webhook.backoff_delays(0.5, 10), 8))
    assert delays == [0.5, 1, 2, 4, 8, 10, 10, 10]


def test_message_fields_sanitize_and_link():
    links = MediaLinks("http://bridge", "t" * 20, 3600)
    content = {"msgtype": "m.file", "body": "x.pdf", "url": "mxc://hs/abcDEF_12",
               "info": {"size": 3, "mimetype": "application/pdf"},
               "format": "org.matrix.custom.html", "formatted_body": "<b>x</b><script>1</script>",
               "m.relates_to": {"rel_type": "m.thread", "event_id": "$root",
                                "m.in_reply_to": {"event_id": "$parent"}}}
    f = webhook.message_fields(content, "acme", links)
    assert f["formatted_body"] == "<b>x</b>" and f["content"]["formatted_body"] == "<b>x</b>"
    assert content["formatted_body"].endswith("</script>")  # the event itself is untouched
    assert f["thread_root"] == "$root" and f["in_reply_to"] == "$parent"
    att = f["attachment"]
    assert att["filename"] == "x.pdf" and att["size"] == 3 and att["content_uri"] == "mxc://hs/abcDEF_12"
    url, query = att["url"].split("?")
    assert url == "http://bridge/_erp/v1/media/acme/hs/abcDEF_12"
    q = dict(p.split("=") for p in query.split("&"))
    assert links.check("acme", "hs", "abcDEF_12", q["exp"], q["sig"])
    assert not links.check("other", "hs", "abcDEF_12", q["exp"], q["sig"])  # tenant-bound
    assert not links.check("acme", "hs", "abcDEF_13", q["exp"], q["sig"])
    assert not links.check("acme", "hs", "abcDEF_12", str(int(q["exp"]) + 1), q["sig"])
    assert not links.check("acme", "hs", "abcDEF_12", q["exp"], q["sig"], now=int(q["exp"]) + 1)


# ---- config ----------------------------------------------------------------------------

def test_defaults_and_derived_values():
    c = parse_config(SECRETS)
    assert c.homeserver.url == "http://127.0.0.1:8008"
    assert c.appservice_url == "http://127.0.0.1:9010"
    assert c.bot_user_id == "@_erp_bot:localhost"
    assert c.database.effective_dsn == "postgresql://postgres:@/postgres?host=data/postgres"
    c.require_secrets()


def test_relative_pgdata_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(SECRETS))
    c = load_config(tmp_path / "b.yaml")
    assert c.database.effective_dsn.endswith(f"host={tmp_path}/data/postgres")


@pytest.mark.parametrize("raw, key", [
    ({"nope": 1}, "nope: unknown key"),
    ({"homeserver": {"url": "ftp://x"}}, "homeserver.url"),
    ({"homeserver": {"server_name": "bad name"}}, "homeserver.server_name"),
    ({"listen": {"port": 70000}}, "listen.port"),
    ({"appservice": {"as_token": "short"}}, "appservice.as_token"),
    ({"appservice": {"sender_localpart": "bot"}}, "must start with namespace_prefix"),
    ({"appservice": {"namespace_prefix": "erp"}}, "appservice.namespace_prefix"),
    ({"erp": {"webhook_url": "http://x/hook"}}, "webhook_secret: required"),
    ({"erp": {"webhook_max_backoff_s": 0}}, "erp.webhook_max_backoff_s"),
    ({"log_level": "LOUD"}, "log_level"),
    (["a list"], "must hold a mapping"),
])
def test_bad_config_names_the_key(raw, key):
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert key in str(e.value)


def test_missing_secrets_are_reported_for_run():
    with pytest.raises(ConfigError) as e:
        parse_config({}).require_secrets()
    assert "appservice.as_token" in str(e.value) and "erp.api_token" in str(e.value)


def test_generated_config_is_valid_and_has_fresh_secrets():
    a = parse_config(yaml.safe_load(generate_config_text(server_name="chat.example.com",
                                                         webhook_url="http://erp/hook")))
    b = parse_config(yaml.safe_load(generate_config_text()))
    a.require_secrets()
    assert a.homeserver.server_name == "chat.example.com"
    assert a.erp.webhook_url == "http://erp/hook" and a.erp.webhook_secret
    assert a.appservice.as_token != b.appservice.as_token
    assert a.appservice.as_token != a.appservice.hs_token


def test_fill_missing_secrets_keeps_comments_and_is_stable(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("# my bridge\nhomeserver:\n  server_name: test.local\n"
                    "appservice:\n  as_token: null   # filled by the tool\n"
                    "erp:\n  webhook_url: http://x/hook\n")
    filled = fill_missing_secrets(path)
    assert set(filled) == {"appservice.as_token", "appservice.hs_token", "erp.api_token",
                           "erp.webhook_secret"}
    text = path.read_text()
    assert "# my bridge" in text and "# filled by the tool" in text
    c = load_config(path)
    c.require_secrets()
    assert fill_missing_secrets(path) == []
    assert load_config(path).appservice.as_token == c.appservice.as_token


# ---- registration ----------------------------------------------------------------------

def test_registration_matches_config():
    c = parse_config({**SECRETS, "homeserver": {"server_name": "test.local"},
                      "listen": {"port": 9123}})
    reg = registration(c)
    assert reg["id"] == "erp-bridge" and reg["url"] == "http://127.0.0.1:9123"
    assert reg["as_token"] == "a" * 20 and reg["hs_token"] == "h" * 20
    assert reg["sender_localpart"] == "_erp_bot"
    assert reg["namespaces"]["users"] == [{"exclusive": True, "regex": r"@_erp_.*:test\.local"}]
    assert reg["namespaces"]["aliases"] == [{"exclusive": True, "regex": r"#_erp_.*:test\.local"}]
    assert reg["namespaces"]["rooms"] == []
    assert reg["rate_limited"] is False and reg["receive_ephemeral"] is False


def test_registration_needs_tokens():
    with pytest.raises(ConfigError):
        registration(parse_config({}))


# ---- ids -------------------------------------------------------------------------------

def test_ids_and_aliases():
    ids = Ids("_erp_", "hs")
    assert ids.user("alice") == "@_erp_u_alice:hs"
    assert ids.user("U-7") == "@_erp_u_=55-7:hs"
    assert ids.tenant_bot("acme") == "@_erp_bot_acme:hs"
    assert ids.alias(ids.object_alias_localpart("acme", "order", "SO.1")) == "#_erp_obj.acme.order.=53=4f.1:hs"
    assert ids.alias(ids.object_alias_localpart("a.b", "order", "1")) == "#_erp_obj.a=2eb.order.1:hs"
    assert ids.object_alias_localpart("a", "order", "1") != ids.object_alias_localpart("b", "order", "1")
    long = ids.alias(ids.object_alias_localpart("T" * 64, "o" * 32, "I" * 64))
    assert len(long.encode()) <= 255 and long.startswith("#_erp_obj.h")
    assert ids.alias(ids.space_alias_localpart("acme")) == "#_erp_space.acme:hs"
    assert ids.alias(ids.general_alias_localpart("acme")) == "#_erp_general.acme:hs"
    assert ids.is_puppet("@_erp_u_alice:hs") and not ids.is_puppet("@_erp_bot_acme:hs")
    assert not ids.is_puppet("@_erp_u_alice:other")


def test_localpart_encoding_is_injective_and_valid():
    seen = {}
    for s in ["a", "A", "=41", "a.b", "a-b", "a_b", "Ab", "aB", "ab"]:
        if not is_erp_id(s):
            continue
        enc = encode_localpart(s)
        assert all(c in "abcdefghijklmnopqrstuvwxyz0123456789._=-" for c in enc)
        assert enc not in seen, (s, seen.get(enc))
        seen[enc] = s


def test_id_rules():
    assert is_erp_id("SO-1001") and is_erp_id("a") and is_erp_id("x" * 64)
    assert not is_erp_id("") and not is_erp_id("x" * 65) and not is_erp_id("a/b")
    assert not is_erp_id("-a") and not is_erp_id("a b") and not is_erp_id("ä")
    assert is_object_type("order") and is_object_type("sales-order")
    assert not is_object_type("Order") and not is_object_type("a_b") and not is_object_type("a.b")


def test_homeserver_txn_id_is_stable_and_distinct():
    assert homeserver_txn_id("a", "order", "1", "t") == homeserver_txn_id("a", "order", "1", "t")
    assert homeserver_txn_id("a", "order", "1", "t") != homeserver_txn_id("a", "order", "1", "u")
    assert homeserver_txn_id("a", "order", "1", "t") != homeserver_txn_id("a", "order", "11", "t")
    assert homeserver_txn_id("a", "order", "1", "t") != homeserver_txn_id("b", "order", "1", "t")
    assert request_hash("a", "b") != request_hash(None, "b")


# ---- request bodies --------------------------------------------------------------------

def test_tenant_body():
    assert TenantBody.model_validate({"name": "ACME"}).name == "ACME"
    for bad in [{}, {"name": ""}, {"name": "  "}, {"name": 5}, {"name": "x" * 256},
                {"name": "a", "extra": 1}]:
        with pytest.raises(ValidationError):
            TenantBody.model_validate(bad)


def test_user_body():
    u = UserBody.model_validate({"tenant_id": "acme", "display_name": "Alice", "active": True})
    assert u.email is None
    UserBody.model_validate({"tenant_id": "acme", "display_name": "A", "active": False,
                             "email": "a@b.c"})
    for bad in [
        {"tenant_id": "acme", "display_name": "A"},                         # active missing
        {"tenant_id": "acme", "display_name": "A", "active": "yes"},        # not a bool
        {"tenant_id": "acme", "display_name": "A", "active": 1},
        {"tenant_id": "a/b", "display_name": "A", "active": True},
        {"tenant_id": "acme", "display_name": "", "active": True},
        {"tenant_id": "acme", "display_name": "A", "active": True, "email": "nope"},
    ]:
        with pytest.raises(ValidationError):
            UserBody.model_validate(bad)


def test_object_body():
    o = ObjectBody.model_validate({"tenant_id": "acme", "title": "Order 1",
                                   "participants": ["a", "b", "a"],
                                   "fields": {"total": "12.50", "qty": 3, "tags": ["x"]}})
    assert o.participants == ["a", "b"]
    assert ObjectBody.model_validate({"tenant_id": "acme", "title": "t"}).fields == {}
    for bad in [
        {"tenant_id": "acme"},
        {"tenant_id": "acme", "title": "t", "participants": "a"},
        {"tenant_id": "acme", "title": "t", "participants": ["bad id"]},
        {"tenant_id": "acme", "title": "t", "fields": []},
        {"tenant_id": "acme", "title": "t", "fields": {"price": 1.5}},      # floats: not in events
        {"tenant_id": "acme", "title": "t", "fields": {"n": 2**60}},
        {"tenant_id": "acme", "title": "t", "fields": {"big": "x" * 40000}},
    ]:
        with pytest.raises(ValidationError):
            ObjectBody.model_validate(bad)


def test_message_body():
    m = MessageBody.model_validate({"body": "hi", "txn_id": "t1"})
    assert m.sender is None
    MessageBody.model_validate({"sender": "alice", "body": "hi", "txn_id": "t-1.2"})
    for bad in [{"body": "hi"}, {"txn_id": "t"}, {"body": "", "txn_id": "t"},
                {"body": "hi", "txn_id": "has space"}, {"body": "hi", "txn_id": ""},
                {"body": "hi", "txn_id": "t", "sender": "bad id"}]:
        with pytest.raises(ValidationError):
            MessageBody.model_validate(bad)


def test_models_reject_unknown_keys():
    with pytest.raises(ValidationError) as e:
        MessageBody.model_validate({"body": "hi", "txn_id": "t", "bodyy": 1})
    assert "bodyy" in json.dumps(e.value.errors(include_url=False, include_input=False), default=str)
