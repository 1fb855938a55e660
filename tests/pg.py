"""A throwaway PostgreSQL cluster for tests and benches: initdb in a temp dir, postgres on a free
port (and a unix socket in that dir), stopped and removed by its owner.

Used by the store contract tests (tests/unit/store/conftest.py), tests/integration/test_postgres.py
and bench/store.py. Binaries come from PATH or Debian's /usr/lib/postgresql/<v>/bin (installed by
scripts/setup.sh); as root the cluster runs as the `postgres` user, since initdb refuses root."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.harness import free_port, wait_for

__all__ = ["PostgresCluster", "pg_bindir", "SKIP_REASON", "USER", "PASSWORD"]

USER, PASSWORD = "k3py", "k3py-test-secret"


def pg_bindir() -> str | None:
    """The folder holding initdb and postgres, or None."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return os.path.dirname(os.path.realpath(found))
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    return None


SKIP_REASON = ("no PostgreSQL binaries (initdb, postgres) on PATH or in "
               "/usr/lib/postgresql/*/bin: run scripts/setup.sh (Debian package postgresql)")


class PostgresCluster:
    """One postgres server. `dsn(db)` is a password-authenticated TCP endpoint; `create_db`
    makes a fresh database. `stop()`/`start()` again simulate an outage (same port, same data).

    `fsync=False` for tests (they never pull the plug); benches keep the default, durable.
    `tls=(server cert, server key, client CA)` (PEM files): only TLS connections with a client
    certificate from that CA whose CN is the user, and the password, are accepted."""

    def __init__(self, *, fsync: bool = True, tls: tuple[str, str, str] | None = None) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError(SKIP_REASON)
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="k3py-pg-"))
        self.data = self.dir / "data"
        # initdb refuses to run as root: then every server process runs as `postgres`
        self._owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self._as_user: dict = {}
        if self._owner is not None:
            self._as_user = {"user": self._owner.pw_uid, "group": self._owner.pw_gid,
                             "extra_groups": []}
            os.chown(self.dir, self._owner.pw_uid, self._owner.pw_gid)
        self.proc: subprocess.Popen | None = None
        self._initdb()
        self._settings = {"fsync": "on" if fsync else "off", "max_connections": "200"}
        if not fsync:
            self._settings.update(synchronous_commit="off", full_page_writes="off")
        if tls is not None:
            self._use_tls(*tls)

    def _own(self, path: Path) -> None:
        if self._owner is not None:
            os.chown(path, self._owner.pw_uid, self._owner.pw_gid)

    def _use_tls(self, cert: str, key: str, client_ca: str) -> None:
        for name, src in (("server.crt", cert), ("server.key", key), ("client-ca.crt", client_ca)):
            dst = self.dir / name
            shutil.copy(src, dst)
            dst.chmod(0o600)
            self._own(dst)
        self._settings.update(ssl="on", ssl_cert_file=str(self.dir / "server.crt"),
                              ssl_key_file=str(self.dir / "server.key"),
                              ssl_ca_file=str(self.dir / "client-ca.crt"))
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-full\n")

    def _bin(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def _initdb(self) -> None:
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        self._own(pwfile)
        out = subprocess.run(
            [self._bin("initdb"), "-D", str(self.data), "-U", USER,
             f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
             "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
            capture_output=True, text=True, timeout=120, **self._as_user)
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")

    def start(self) -> PostgresCluster:
        cmd = [self._bin("postgres"), "-D", str(self.data),
               "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.dir)]
        for name, value in self._settings.items():
            cmd += ["-c", f"{name}={value}"]
        log = open(self.dir / "postgres.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, **self._as_user)
        log.close()
        wait_for(self._accepting, 30, 0.05, f"postgres on port {self.port}")
        return self

    def _accepting(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("postgres exited:\n" + self.log_tail())
        out = subprocess.run([self._bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True, timeout=10)
        return out.returncode == 0

    def log_tail(self) -> str:
        path = self.dir / "postgres.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = subprocess.run(
            [self._bin("psql"), "-h", str(self.dir), "-p", str(self.port), "-U", USER,
             "-d", db, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
            capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {out.stderr}")
        return out.stdout

    def create_db(self, name: str) -> str:
        """A new empty database; returns its endpoint."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def dsn(self, db: str, *, password: str = PASSWORD, sslmode: str = "disable") -> str:
        return f"postgres://{USER}:{password}@127.0.0.1:{self.port}/{db}?sslmode={sslmode}"

    def stop(self) -> None:
        """Fast shutdown (clients are disconnected), as an operator's `pg_ctl stop` would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
