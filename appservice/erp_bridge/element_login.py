"""The sign-in helper page for Element Web.

Element exchanges a `loginToken` query parameter at /login, but only for the homeserver
it remembered in its localStorage (`mx_sso_hs_url`) when it started a single-sign-on
itself; a token arriving cold is dropped. This page, served from Element's own origin
(next to its index.html), stores the homeserver URL the way Element does and then opens
Element with the token:

    <element_url>/erp-login.html#hs=<homeserver url>&loginToken=<token>

The token travels in the fragment, so it never reaches a web server's access log.
"""
from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<title>Signing in…</title>
</head>
<body>
<p id="msg">Signing in…</p>
<script>
(function () {
  var params = new URLSearchParams(window.location.hash.slice(1));
  var hs = params.get("hs");
  var token = params.get("loginToken");
  if (!hs || !token || !/^https?:\\/\\//.test(hs)) {
    document.getElementById("msg").textContent = "This sign-in link is incomplete or damaged.";
    return;
  }
  window.localStorage.setItem("mx_sso_hs_url", hs);
  window.localStorage.removeItem("mx_sso_is_url");
  var target = new URL("./", window.location.href);
  target.search = "?loginToken=" + encodeURIComponent(token);
  target.hash = "";
  window.location.replace(target.href);
})();
</script>
</body>
</html>
"""
