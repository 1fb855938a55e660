"""`k3py snapshot save|ls|delete|prune|restore`: K3s's etcd-snapshot for the embedded SQLite
store, done on the data dir (k3py.server.snapshots) while the server runs (restore: stopped)."""

from __future__ import annotations

import datetime as dt
import os

from k3py import PROGRAM
from k3py.cli.flags import SNAPSHOT, HelpRequested, UsageError, help_text, snapshot_config
from k3py.config import SnapshotConfig, redact_endpoint

__all__ = ["snapshot_command", "POSTGRES_REFUSAL"]

_SUBCOMMANDS = ("save", "ls", "list", "delete", "prune", "restore")

USAGE = f"""USAGE:
   {PROGRAM} snapshot save [--name NAME] [--dir DIR]    an online copy of the store
   {PROGRAM} snapshot ls [--dir DIR]                    Name, Location, Size, Created
   {PROGRAM} snapshot delete NAME [NAME...]
   {PROGRAM} snapshot prune [--name NAME] [--snapshot-retention N]
   {PROGRAM} snapshot restore NAME|FILE                 with the server stopped

A snapshot is named <name>-<node>-<unix time> (name: on-demand, or scheduled for the
server's own, --snapshot-schedule-cron). Restoring is also
'{PROGRAM} server --cluster-reset --cluster-reset-restore-path FILE', as K3s.

""" + help_text(SNAPSHOT).split("OPTIONS:", 1)[1].join(("OPTIONS:", ""))

POSTGRES_REFUSAL = ("the datastore is PostgreSQL ({endpoint}): back it up and restore it "
                    "with the database's own tools (pg_dump, pg_restore); " + PROGRAM +
                    " snapshots only its embedded SQLite store")


def _save(config: SnapshotConfig) -> None:
    from k3py.server import snapshots
    name = snapshots.snapshot_name(config.name, config.effective_node_name,
                                   dt.datetime.now(dt.UTC))
    snap = snapshots.save(config.db_path, config.snapshots_dir, name)
    print(f"Snapshot {snap.name} saved.")


def _ls(config: SnapshotConfig) -> None:
    from k3py.server import snapshots
    rows = [("Name", "Location", "Size", "Created")]
    rows += [(s.name, s.location, str(s.size), s.created.strftime("%Y-%m-%dT%H:%M:%SZ"))
             for s in snapshots.list_snapshots(config.snapshots_dir)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print(" ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[3])


def _delete(config: SnapshotConfig, names: list[str]) -> None:
    from k3py.server import snapshots
    if not names:
        raise UsageError(f"no snapshot named; usage: {PROGRAM} snapshot delete NAME [NAME...] "
                         f"('{PROGRAM} snapshot ls' lists them)")
    for name in snapshots.delete(config.snapshots_dir, names):
        print(f"Snapshot {name} deleted.")


def _prune(config: SnapshotConfig) -> None:
    from k3py.server import snapshots
    pruned = snapshots.prune(config.snapshots_dir, config.name, config.snapshot_retention)
    for name in pruned:
        print(f"Snapshot {name} deleted.")
    print(f"Kept the newest {config.snapshot_retention} snapshots named {config.name}-*.")


def _restore(config: SnapshotConfig, names: list[str]) -> None:
    from k3py.server import snapshots
    if len(names) != 1:
        raise UsageError(f"usage: {PROGRAM} snapshot restore NAME|FILE (one snapshot)")
    path = names[0]
    if os.path.sep not in path and not os.path.exists(path):
        path = os.path.join(config.snapshots_dir, path)
    kept = snapshots.restore(config.db_path, path)
    print(f"Store restored from {path}" + (f" (the previous store is kept as {kept})"
                                           if kept else "") + "; start the server now.")


def snapshot_command(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        raise HelpRequested(USAGE)
    sub, rest = argv[0], argv[1:]
    if sub not in _SUBCOMMANDS:
        raise UsageError(f"unknown snapshot command {sub!r}; one of save, ls, delete, prune, "
                         f"restore (run '{PROGRAM} snapshot --help')")
    if any(arg in ("-h", "--help") for arg in rest):
        raise HelpRequested(USAGE)
    names: list[str] = []
    config = snapshot_config(rest, names)
    if config.datastore_endpoint:
        raise UsageError(POSTGRES_REFUSAL.format(
            endpoint=redact_endpoint(config.datastore_endpoint)))
    if names and sub not in ("delete", "restore"):
        raise UsageError(f"unexpected argument {names[0]!r} for '{PROGRAM} snapshot {sub}'")
    from k3py.server.snapshots import SnapshotError
    try:
        if sub == "save":
            _save(config)
        elif sub in ("ls", "list"):
            _ls(config)
        elif sub == "delete":
            _delete(config, names)
        elif sub == "prune":
            _prune(config)
        else:
            _restore(config, names)
    except SnapshotError as e:
        raise UsageError(str(e)) from None
    return 0
