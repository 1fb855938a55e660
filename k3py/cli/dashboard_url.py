"""`k3py dashboard-url [--data-dir DIR] [--server URL]`: print a one-time link that logs the
admin in to the web dashboard, valid for a few minutes (docs/dashboard.md). Asks the running
server, as its admin (cli/adminapi.py), for a login code and puts it in the link's fragment,
which the browser never sends to a server or a proxy log; the page trades it for a session."""

from __future__ import annotations

from k3py.cli.adminapi import AdminAPI
from k3py.cli.flags import DASHBOARD_URL, parse
from k3py.config import ServerConfig

__all__ = ["dashboard_url_command"]

_PATH = "/dashboard/api/login-links"  # k3py.server.dashboard's route (cli imports no server)


def dashboard_url_command(argv: list[str]) -> int:
    values = parse(argv, DASHBOARD_URL)
    config = ServerConfig(data_dir=values.get("data_dir") or ServerConfig().data_dir)
    api = AdminAPI(config, values.get("server", ""))
    body = api.call("POST", _PATH, "a dashboard login link")
    print(f"{api.server}/dashboard/#login={body['code']}")
    minutes = max(1, int(body.get("expiresInSeconds", 300)) // 60)
    print(f"(one use; valid for {minutes} minutes)", flush=True)
    return 0
