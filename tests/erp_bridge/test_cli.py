"""The erp-bridge command: generate-config, generate-registration, run's config checks."""
from __future__ import annotations

import subprocess
import sys

import yaml

from appservice.erp_bridge.cli import main
from appservice.erp_bridge.config import load_config
from tests.server_harness import REPO


def test_generate_config_then_registration(tmp_path, capsys):
    cfg, reg = tmp_path / "bridge.yaml", tmp_path / "reg.yaml"
    assert main(["generate-config", "-o", str(cfg), "--server-name", "chat.example.com",
                 "--port", "9999", "--webhook-url", "http://erp.local/hook"]) == 0
    assert cfg.stat().st_mode & 0o077 == 0  # secrets: owner only
    assert main(["generate-config", "-o", str(cfg)]) == 2  # no silent overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["generate-registration", "--config", str(cfg), "--output", str(reg)]) == 0
    config = load_config(cfg)
    registration = yaml.safe_load(reg.read_text())
    assert registration["as_token"] == config.appservice.as_token
    assert registration["hs_token"] == config.appservice.hs_token
    assert registration["url"] == "http://127.0.0.1:9999"
    assert registration["namespaces"]["users"][0]["regex"] == r"@_erp_.*:chat\.example\.com"
    # Running it again gives the same file: the config is the source of truth.
    first = reg.read_text()
    assert main(["generate-registration", "--config", str(cfg), "--output", str(reg)]) == 0
    assert reg.read_text() == first


def test_generate_registration_fills_a_hand_written_config(tmp_path):
    cfg, reg = tmp_path / "bridge.yaml", tmp_path / "reg.yaml"
    cfg.write_text("homeserver:\n  server_name: example.org\n")
    assert main(["generate-registration", "--config", str(cfg), "--output", str(reg)]) == 0
    config = load_config(cfg)
    config.require_secrets()
    assert yaml.safe_load(reg.read_text())["as_token"] == config.appservice.as_token


def test_run_refuses_bad_or_incomplete_config(tmp_path):
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text("homeserver:\n  url: not-a-url\n")
    r = subprocess.run([sys.executable, "-m", "appservice.erp_bridge.cli", "run", "--config", str(cfg)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "homeserver.url" in r.stderr
    cfg.write_text("homeserver:\n  server_name: example.org\n")
    r = subprocess.run([sys.executable, "-m", "appservice.erp_bridge.cli", "run", "--config", str(cfg)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "appservice.as_token" in r.stderr
    r = subprocess.run([sys.executable, "-m", "appservice.erp_bridge.cli", "run", "--config",
                        str(tmp_path / "missing.yaml")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_element_login_page(tmp_path):
    out = tmp_path / "erp-login.html"
    assert main(["element-login-page", "-o", str(out)]) == 0
    page = out.read_text()
    assert "mx_sso_hs_url" in page and "loginToken" in page


def test_bridge_imports_nothing_of_the_server():
    code = ("import sys, appservice.erp_bridge.app, appservice.erp_bridge.cli;"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('homeserver', 'client_api', 'storage', 'sync') or "
            "(m.startswith('appservice.') and not m.startswith('appservice.erp_bridge')));"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
