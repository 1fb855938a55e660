"""Secrets at rest on a real server: a secret created with kubectl is absent in plaintext from
the SQLite database and its WAL, reads back through kubectl, survives a restart, and
`k3py secrets-encrypt rotate-keys` re-encrypts it under a new key without downtime; a
ConfigMap stays plain; `--secrets-encryption=false` on a new server stores secrets plain."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ServerProcess, clean_env

pytestmark = pytest.mark.integration

MARK = "s3cr3t-marker-4711"


def db_bytes(srv: ServerProcess) -> bytes:
    db = srv.data_dir / "server" / "db"
    return b"".join(p.read_bytes() for p in db.iterdir() if p.is_file())


def secrets_encrypt(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "k3py", "secrets-encrypt", *args,
                           "--data-dir", str(srv.data_dir), "--server", srv.url],
                          capture_output=True, text=True, timeout=120, env=clean_env())


def read_secret(srv: ServerProcess) -> str:
    out = srv.kubectl("get", "secret", "db", "-o", "jsonpath={.data.password}")
    return base64.b64decode(out.stdout).decode()


def test_secret_encrypted_at_rest_restart_and_rotate(tmp_path: Path):
    srv = ServerProcess(tmp_path / "srv").start()
    try:
        srv.kubectl("create", "secret", "generic", "db", f"--from-literal=password={MARK}")
        srv.kubectl("create", "configmap", "plain", f"--from-literal=v={MARK}-cm")
        assert read_secret(srv) == MARK
        raw = db_bytes(srv)
        assert f"{MARK}-cm".encode() in raw  # the store is readable as such...
        assert MARK.encode() not in raw.replace(f"{MARK}-cm".encode(), b"")  # ...not secrets
        assert base64.b64encode(MARK.encode()) not in raw
        key_file = srv.data_dir / "server" / "cred" / "encryption-config.json"
        assert key_file.stat().st_mode & 0o777 == 0o600

        out = secrets_encrypt(srv, "status")
        assert out.returncode == 0, out.stderr
        assert "Encryption Status: Enabled" in out.stdout
        first = out.stdout.split("Current Writer Key: ")[1].split()[0]

        srv.stop()
        srv.start()
        assert read_secret(srv) == MARK

        out = secrets_encrypt(srv, "rotate-keys")
        assert out.returncode == 0, out.stderr
        assert "Reencrypted: 1" in out.stdout and f"Dropped: {first}" in out.stdout
        second = out.stdout.split("Current Writer Key: ")[1].split()[0]
        assert second != first
        assert read_secret(srv) == MARK
        srv.stop()
        srv.start()
        assert read_secret(srv) == MARK
        assert first not in key_file.read_text() and second in key_file.read_text()

        out = secrets_encrypt(srv, "rotate")
        assert out.returncode == 1 and "prepare first" in out.stderr
        out = secrets_encrypt(srv, "explode")
        assert out.returncode == 1 and "unknown secrets-encrypt command" in out.stderr
    finally:
        srv.stop()


def test_turned_off_stores_new_secrets_plain(tmp_path: Path):
    srv = ServerProcess(tmp_path / "srv", extra_args=["--secrets-encryption=false"]).start()
    try:
        srv.kubectl("create", "secret", "generic", "db", f"--from-literal=password={MARK}")
        assert base64.b64encode(MARK.encode()) in db_bytes(srv)
        out = secrets_encrypt(srv, "status")
        assert out.returncode == 0 and "Encryption Status: Disabled" in out.stdout
        out = secrets_encrypt(srv, "rotate-keys")
        assert out.returncode == 1 and "--secrets-encryption" in out.stderr
    finally:
        srv.stop()
