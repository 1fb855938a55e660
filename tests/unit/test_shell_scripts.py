"""The shell scripts a user or CI runs pass shellcheck: install.sh (piped from curl into any
POSIX sh), the packaging, air-gap and setup scripts. The scripts install.sh writes
(k3py-killall.sh, the uninstall scripts) are checked where they are written, in
tests/integration/test_install.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [ROOT / "install.sh", ROOT / ".ci" / "run",
           *sorted((ROOT / "packaging").glob("*.sh")), *sorted((ROOT / "airgap").glob("*.sh")),
           *sorted((ROOT / "scripts").glob("*.sh"))]


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="needs shellcheck")
def test_shell_scripts_pass_shellcheck():
    out = subprocess.run(["shellcheck", "-x", "-f", "gcc", *map(str, SCRIPTS)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
