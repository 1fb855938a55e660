"""`k3py token [--data-dir DIR]`: print the join token agents use (K3s: server/node-token),
read from <data-dir>/server/token as written by the server's first start."""

from __future__ import annotations

from k3py import PROGRAM
from k3py.cli.flags import TOKEN, UsageError, parse
from k3py.config import ServerConfig

__all__ = ["token_command"]


def token_command(argv: list[str]) -> int:
    if argv and argv[0] == "create":
        raise UsageError(f"'{PROGRAM} token create' is not available yet; agents join with the "
                         f"server token printed by '{PROGRAM} token'")
    values = parse(argv, TOKEN)
    config = ServerConfig(data_dir=values.get("data_dir") or ServerConfig().data_dir)
    try:
        with open(config.token_path) as f:
            token = f.read().strip()
    except FileNotFoundError:
        raise UsageError(f"no token at {config.token_path}; start '{PROGRAM} server' first, "
                         f"or pass the server's --data-dir") from None
    except PermissionError:
        raise UsageError(f"cannot read {config.token_path}: permission denied; run as "
                         f"root (sudo {PROGRAM} token)") from None
    except OSError as e:
        raise UsageError(f"cannot read {config.token_path}: {e.strerror}") from None
    if not token:
        raise UsageError(f"{config.token_path} is empty; restart '{PROGRAM} server' to "
                         f"write it again")
    print(token)
    return 0
