"""`k3py token [--data-dir DIR]`: print the join token agents use (K3s: node-token)."""

from __future__ import annotations

import os

from k3py.cli.flags import Flag, UsageError, parse
from k3py.config import ServerConfig

__all__ = ["token_command"]

_FLAGS = (Flag("data-dir", str, "(data) Folder holding the server state"),
          Flag("config", str, "(config) Load configuration from FILE", env="K3PY_CONFIG_FILE"))


def token_command(argv: list[str]) -> int:
    values = parse(argv, _FLAGS, "token")
    config = ServerConfig(data_dir=values.get("data_dir") or ServerConfig().data_dir)
    try:
        with open(config.token_path) as f:
            print(f.read().strip())
    except FileNotFoundError:
        raise UsageError(f"no token at {config.token_path}: start 'k3py server' first or pass "
                         f"--data-dir") from None
    except PermissionError:
        raise UsageError(f"cannot read {config.token_path}: run as root") from None
    return 0 if os.path.exists(config.token_path) else 1
