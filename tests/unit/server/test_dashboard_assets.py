"""The dashboard's packaged assets: none names another origin (the page must work air-gapped
under `default-src 'self'`), scripts and stylesheets get hashed names that the files naming
them are rewritten to, and a name inside a library's code is left alone."""

from __future__ import annotations

import re

import pytest

from k3py.webui.assets import build_assets, load_assets

pytestmark = pytest.mark.unit

# XML namespace names in preact's source: identifiers compared as strings, never fetched
_NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1998/Math/MathML",
               "http://www.w3.org/1999/xhtml"}
_URL = re.compile(rb"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'`)]*")


@pytest.mark.parametrize("package", ["k3py.server.dashboard", "k3py.agent.dashboard"])
def test_no_asset_names_another_origin(package):
    for name, asset in load_assets(package).items():
        if "LICENSE" in name or name.endswith(".json"):
            continue  # licence text and the vendor manifest are never loaded by the page
        urls = {u.decode() for u in _URL.findall(asset.body)} - _NAMESPACES
        assert not urls, f"{name} names another origin: {sorted(urls)}"


def test_packaged_assets_are_complete_and_hashed():
    assets = load_assets("k3py.server.dashboard")
    page = assets["index.html"].body.decode()
    app = next(n for n in assets if re.fullmatch(r"app\.[0-9a-f]{12}\.js", n))
    assert f'src="{app}"' in page and not assets["index.html"].immutable
    assert assets[app].immutable
    common = next(n for n in assets if re.fullmatch(r"common\.[0-9a-f]{12}\.js", n))
    assert f'"./{common}"' in assets[app].body.decode()
    ui = next(n for n in assets if re.fullmatch(r"ui\.[0-9a-f]{12}\.js", n))
    assert f'"./{ui}"' in assets[common].body.decode()
    for lib in ("preact", "htm"):
        vendored = next(n for n in assets if re.fullmatch(rf"vendor/{lib}\.[0-9a-f]{{12}}\.mjs", n))
        assert f'"./{vendored}"' in assets[ui].body.decode()
    assert {"vendor/LICENSE.preact", "vendor/LICENSE.htm", "vendor/LICENSE.js-yaml"} <= set(assets)


@pytest.mark.parametrize("package, page", [("k3py.server.dashboard", "index.html"),
                                           ("k3py.agent.dashboard", "edge.html")])
def test_each_page_names_its_icon(package, page):
    """Else the browser asks /favicon.ico, which is the API's (401 without credentials)."""
    assets = load_assets(package)
    icon = next(n for n in assets if re.fullmatch(r"favicon\.[0-9a-f]{12}\.svg", n))
    assert f'<link rel="icon" href="{icon}" type="image/svg+xml">' in assets[page].body.decode()
    assert assets[icon].immutable and assets[icon].content_type == "image/svg+xml"


def test_only_quoted_references_are_rewritten():
    assets = build_assets({"style.css": b"p{}", "lib.js": b'x.style.cssText="";',
                           "index.html": b'<link href="style.css"><script src="./lib.js">'})
    lib = next(n for n in assets if n.startswith("lib."))
    assert assets[lib].body == b'x.style.cssText="";'
    css = next(n for n in assets if n.startswith("style."))
    assert assets["index.html"].body == f'<link href="{css}"><script src="./{lib}">'.encode()


def test_a_reference_cycle_is_an_error():
    with pytest.raises(ValueError, match="cycle"):
        build_assets({"a.js": b'import "./b.js"', "b.js": b'import "./a.js"'})
