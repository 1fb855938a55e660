"""The docs say what the code does: docs/configuration.md's flag tables are what
tools/configuration_doc.py makes from the flag table, every `k3py COMMAND --flag` shown in
README.md and docs/ names a command and flags that exist, and every page is linked from
the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from k3py.cli import _commands
from k3py.cli import flags as flagtable
from tools import configuration_doc

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# `k3py WORDS`: the command (and sub-command) a line runs, as the flag table names it
SUBCOMMANDS = {("agent", "pods"): flagtable.PODS}
# commands whose flags are not k3py's own
NOT_OURS = {"kubectl"}
# where a command starts: a line (after a prompt or sudo), $( ... ), a pipe, && or ;
_INVOCATION = re.compile(r"(?:^\s*(?:\$ |sudo )?|\$\(|\|\s*|&&\s*|;\s*)"
                         r"k3py ((?:[a-z][a-z0-9-]*)(?: [a-z][a-z0-9-]*)?)")
_END = re.compile(r"[|;`)#]|&&")


def test_configuration_doc_is_current():
    page = configuration_doc.DOC.read_text()
    assert configuration_doc.updated(page) == page, \
        "docs/configuration.md is stale: run python3 tools/configuration_doc.py"


def _code(text: str) -> list[str]:
    """Lines of fenced blocks (continuations joined) and inline code spans."""
    out: list[str] = []
    fenced = False
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            pending += re.sub(r"(^|\s)#.*$", "", line).rstrip()  # shell comments are prose
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            out.append(pending)
            pending = ""
        else:
            out += re.findall(r"`([^`]+)`", line)
    return out


def invocations(page: Path) -> list[tuple[str, list[str], str]]:
    """(command, flags, the line) for each `k3py ...` in the page's code."""
    found = []
    for line in _code(page.read_text()):
        for m in _INVOCATION.finditer(line):
            words = tuple(m[1].split())
            command = SUBCOMMANDS.get(words) or words[0]
            rest = _END.split(line[m.end():], 1)[0]
            found.append((command, re.findall(r"(?<![\w-])--([a-z0-9-]+)", rest), line))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_k3py_flag_shown_exists(page):
    commands = set(_commands()) | set(SUBCOMMANDS.values())
    for command, flags, line in invocations(page):
        if command in NOT_OURS:
            continue
        assert command in commands, f"{page.name}: no command 'k3py {command}': {line}"
        known = {f.name for f in flagtable.flags_for(command)} | {"help", "version"}
        known |= {alias for f in flagtable.flags_for(command) for cmd, alias in f.aliases
                  if cmd == command}
        for flag in flags:
            assert flag in known, f"{page.name}: 'k3py {command}' has no --{flag}: {line}"


def test_the_readme_links_every_page():
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        link = str(page.relative_to(ROOT))
        assert link in readme, f"README.md does not link {link}"
