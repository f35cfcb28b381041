"""The browser libraries: pinned in package.json, vendored with their licences, nothing from a CDN."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "services" / "worker" / "numcast_worker" / "static" / "vendor"


def test_vendored_libraries_are_the_pinned_versions_with_their_licences():
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]
    vendored = json.loads((VENDOR / "vendor.json").read_text())
    assert {name: info["version"] for name, info in vendored.items()} == pinned
    for name, info in vendored.items():
        assert (VENDOR / f"{name}.LICENSE").read_text().strip()
        assert all((VENDOR / file).stat().st_size > 0 for file in info["files"])
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", version) for version in pinned.values()), "exact pins only"


def test_pages_load_nothing_from_another_host():
    pages = [*ROOT.glob("services/*/numcast_*/templates/*.html"), *ROOT.glob("services/*/numcast_*/static/*.js")]
    assert pages
    for page in pages:
        text = page.read_text()
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), page
        assert not re.search(r"""(import|from)\s*["'](https?:)?//""", text), page
