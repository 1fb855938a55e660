"""Reading the YAML files the server is pointed at (the audit policy, the admission
configuration): a file that cannot be used is one ConfigError naming the file and the reason,
which the server's start turns into its one-line StartupError."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["ConfigError", "read_yaml"]


class ConfigError(ValueError):
    pass


def read_yaml(path: str, what: str) -> Any:
    """The YAML document in `path`; `what` names it in the error ("the audit policy")."""
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not YAML: {e}") from None
