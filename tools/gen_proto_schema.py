"""Dev-time generator of k3py/api/data/proto_schema.json.gz: the protobuf field tables of every
built-in kind we serve, from upstream generated.proto files plus the Go struct tags in types.go.

Offline run (each path is a checkout *or* a bare git dir, e.g. the mirrors under /work/.mirror/):

    python tools/gen_proto_schema.py \\
        --api ~/src/k8s.io/api \\
        --apimachinery ~/src/k8s.io/apimachinery \\
        --apiextensions ~/src/k8s.io/apiextensions-apiserver

Schema layout (JSON, gzipped):
    {"version": 1,
     "groups": {"v1": "k8s.io.api.core.v1", "apps/v1": "k8s.io.api.apps.v1", ...},
     "messages": {"<full message name>": {"fields": {"<number>": [json_name, kind, flags, ref]},
                                          "list": true?}}}
kind is a proto scalar type ("string", "int32", "bytes", ...), "message" (ref = full name) or
"map" (ref = [key_kind, value_kind, value_message_or_null]). flags: 1 repeated, 2 Go pointer
(a zero value on the wire is meaningful), 4 inlined into the parent JSON object, 8 no `omitempty`
in the json tag (Go's JSON encoder writes zero scalars of such fields, e.g. PriorityClass.value). "list" marks a
message that wraps a Go slice type (`+protobuf.nullable=true`, e.g. ExtraValue): JSON is `items`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "k3py" / "api" / "data" / "proto_schema.json.gz"

# (repo key, package dir, apiVersion or None for support packages)
PACKAGES: list[tuple[str, str, str | None]] = [
    ("api", "core/v1", "v1"),
    ("api", "apps/v1", "apps/v1"),
    ("api", "batch/v1", "batch/v1"),
    ("api", "autoscaling/v1", "autoscaling/v1"),
    ("api", "autoscaling/v2", "autoscaling/v2"),
    ("api", "networking/v1", "networking.k8s.io/v1"),
    ("api", "storage/v1", "storage.k8s.io/v1"),
    ("api", "coordination/v1", "coordination.k8s.io/v1"),
    ("api", "events/v1", "events.k8s.io/v1"),
    ("api", "discovery/v1", "discovery.k8s.io/v1"),
    ("api", "policy/v1", "policy/v1"),
    ("api", "rbac/v1", "rbac.authorization.k8s.io/v1"),
    ("api", "scheduling/v1", "scheduling.k8s.io/v1"),
    ("api", "node/v1", "node.k8s.io/v1"),
    ("api", "admissionregistration/v1", "admissionregistration.k8s.io/v1"),
    ("api", "authentication/v1", "authentication.k8s.io/v1"),
    ("api", "authorization/v1", "authorization.k8s.io/v1"),
    ("api", "certificates/v1", "certificates.k8s.io/v1"),
    ("apiextensions", "pkg/apis/apiextensions/v1", "apiextensions.k8s.io/v1"),
    ("api", "scheduling/v1alpha3", None),  # referenced by batch/v1 Job scheduling (alpha)
    ("apimachinery", "pkg/apis/meta/v1", None),
    ("apimachinery", "pkg/runtime", None),
    ("apimachinery", "pkg/runtime/schema", None),
    ("apimachinery", "pkg/util/intstr", None),
    ("apimachinery", "pkg/api/resource", None),
]

SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "sint32", "sint64",
           "fixed32", "fixed64", "sfixed32", "sfixed64", "double", "float"}

FIELD_RE = re.compile(r"^(optional|repeated|required)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*[;\[]")
MAP_RE = re.compile(r"^map\s*<\s*([\w.]+)\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*(\d+)\s*[;\[]")
GO_FIELD_RE = re.compile(r"^(?:(\w+)\s+)?(\S+)\s+`([^`]*)`")
TAG_RE = re.compile(r'(\w+):"([^"]*)"')


class Source:
    """Reads files from a work tree or a bare git directory."""

    def __init__(self, path: str) -> None:
        self.path = Path(path).expanduser()
        self.bare = (self.path / "HEAD").is_file() and (self.path / "objects").is_dir()

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", "--git-dir", str(self.path), *args], check=True,
                              capture_output=True, text=True).stdout

    def list(self, directory: str) -> list[str]:
        if self.bare:
            out = self._git("ls-tree", "--name-only", "HEAD", directory.rstrip("/") + "/")
            return [Path(p).name for p in out.split()]
        d = self.path / directory
        return sorted(p.name for p in d.iterdir() if p.is_file()) if d.is_dir() else []

    def read(self, path: str) -> str:
        if self.bare:
            return self._git("show", f"HEAD:{path}")
        return (self.path / path).read_text()


def parse_proto(text: str) -> tuple[str, dict[str, dict]]:
    pkg = re.search(r"^package\s+([\w.]+)\s*;", text, re.M).group(1)
    messages: dict[str, dict] = {}
    comments: list[str] = []
    cur: dict | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("//"):
            comments.append(line)
            continue
        m = re.match(r"^message\s+(\w+)\s*\{", line)
        if m:
            cur = {"fields": {}}
            if any("+protobuf.nullable=true" in c for c in comments):
                cur["list"] = True
            messages[m.group(1)] = cur
        elif cur is not None and (m := FIELD_RE.match(line)):
            label, typ, name, num = m.groups()
            kind, ref = resolve(pkg, typ)
            cur["fields"][num] = [name, kind, 1 if label == "repeated" else 0, ref]
        elif cur is not None and (m := MAP_RE.match(line)):
            ktyp, vtyp, name, num = m.groups()
            vkind, vref = resolve(pkg, vtyp)
            cur["fields"][num] = [name, "map", 0, [resolve(pkg, ktyp)[0], vkind, vref]]
        elif line == "}":
            cur = None
        comments = []
    return pkg, messages


def resolve(pkg: str, typ: str) -> tuple[str, str | None]:
    if typ in SCALARS:
        return typ, None
    return "message", typ[1:] if typ.startswith(".") else f"{pkg}.{typ}"


def parse_go_structs(text: str) -> dict[str, dict[str, tuple[str, int]]]:
    """struct name -> protobuf field number -> (json name, flags from the Go declaration)."""
    structs: dict[str, dict[str, tuple[str, int]]] = {}
    cur: dict | None = None
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r"^type\s+(\w+)\s+struct\s*\{", line)
        if m:
            cur = structs.setdefault(m.group(1), {})
            continue
        if cur is None:
            continue
        if raw.startswith("}"):
            cur = None
            continue
        m = GO_FIELD_RE.match(line)
        if not m or line.startswith("//"):
            continue
        name, gotype, tag = m.groups()
        tags = dict(TAG_RE.findall(tag))
        pparts = tags.get("protobuf", "").split(",")
        if len(pparts) < 2:
            continue
        num = pparts[1]
        jparts = tags.get("json", "").split(",")
        jname = jparts[0]
        inline = (name is None and jname == "") or "inline" in jparts[1:]
        if jname == "-":
            continue
        flags = ((2 if gotype.startswith("*") else 0) | (4 if inline else 0)
                 | (0 if "omitempty" in jparts[1:] else 8))
        cur[num] = (jname, flags)
    return structs


def build(sources: dict[str, Source]) -> dict:
    messages: dict[str, dict] = {}
    groups: dict[str, str] = {}
    missing: list[str] = []
    for key, directory, api_version in PACKAGES:
        src = sources[key]
        files = src.list(directory)
        if "generated.proto" not in files:
            continue
        pkg, msgs = parse_proto(src.read(f"{directory}/generated.proto"))
        go: dict[str, dict] = {}
        for fname in files:
            if (fname.endswith(".go") and not fname.endswith("_test.go")
                    and not fname.startswith(("zz_generated", "generated"))):
                go.update(parse_go_structs(src.read(f"{directory}/{fname}")))
        for mname, msg in msgs.items():
            gofields = go.get(mname, {})
            for num, field in msg["fields"].items():
                info = gofields.get(num)
                if info is None:
                    if gofields:
                        missing.append(f"{pkg}.{mname}.{field[0]}")
                    continue
                jname, flags = info
                if jname:
                    field[0] = jname
                field[2] |= flags
            messages[f"{pkg}.{mname}"] = msg
        if api_version:
            groups[api_version] = pkg
    unresolved = sorted({f[3] for m in messages.values() for f in m["fields"].values()
                         if f[1] == "message" and f[3] not in messages}
                        | {f[3][2] for m in messages.values() for f in m["fields"].values()
                           if f[1] == "map" and f[3][2] and f[3][2] not in messages})
    for name in unresolved:
        print(f"warning: unresolved message {name}", file=sys.stderr)
    for name in missing:
        print(f"warning: no Go tag for {name}", file=sys.stderr)
    return {"version": 1, "groups": groups, "messages": messages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--api", required=True, help="k8s.io/api checkout or bare git dir")
    ap.add_argument("--apimachinery", required=True, help="k8s.io/apimachinery checkout")
    ap.add_argument("--apiextensions", required=True, help="k8s.io/apiextensions-apiserver")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    schema = build({"api": Source(args.api), "apimachinery": Source(args.apimachinery),
                    "apiextensions": Source(args.apiextensions)})
    data = json.dumps(schema, separators=(",", ":"), sort_keys=True).encode()
    Path(args.out).write_bytes(gzip.compress(data, 9, mtime=0))
    print(f"wrote {args.out}: {len(schema['messages'])} messages, {len(data)} bytes raw")


if __name__ == "__main__":
    main()
