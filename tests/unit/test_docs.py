"""The README and docs/: every link and anchor resolves, and every env var and metric is documented exactly once."""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path

import pytest

from numcast_alerter.settings import AlerterSettings
from numcast_control.settings import ControlSettings
from numcast_worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "bench" / "README.md"])
LINK = re.compile(r"\]\(([^)\s]+)\)|(?:src|href)=\"([^\"]+)\"")  # markdown links and images, HTML attributes


def prose(text: str) -> str:
    """`text` without fenced code blocks, whose lines are neither headings nor links."""
    return re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def anchors(page: Path) -> set[str]:
    """Every anchor a page has: one per heading, with GitHub's -1, -2 for repeats."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(page.read_text()), re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links() -> list[tuple[Path, str]]:
    return [
        (page, target)
        for page in PAGES
        for match in LINK.finditer(prose(page.read_text()))
        for target in match.groups()
        if target and not re.match(r"[a-z]+:", target)
    ]


def test_the_slug_matches_githubs():
    assert slug("The `alerts` channel and the active set in Redis") == "the-alerts-channel-and-the-active-set-in-redis"
    assert slug("`clients.py`: figures") == "clientspy-figures"
    assert slug("The dashboard at 1,000 values per second") == "the-dashboard-at-1000-values-per-second"


@pytest.mark.parametrize("page,target", links(), ids=lambda item: str(item))
def test_every_relative_link_and_anchor_resolves(page, target):
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.exists(), f"{page.relative_to(ROOT)}: {target}: no such file"
    if anchor:
        assert resolved.suffix == ".md", f"{page.relative_to(ROOT)}: {target}: an anchor into a file that is no page"
        assert anchor in anchors(resolved), f"{page.relative_to(ROOT)}: {target}: no such heading"


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def env_rows(text: str) -> list[str]:
    """The env var in the first cell of each table row of `text`."""
    return re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", prose(text), re.MULTILINE)


def generated(name: str) -> str:
    """The text of docs/configuration.md's generated table `name`."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    return text.split(f"<!-- settings:{name} -->", 1)[1].split(f"<!-- /settings:{name} -->", 1)[0]


@pytest.mark.parametrize(
    "name,cls", [("control", ControlSettings), ("worker", WorkerSettings), ("alerter", AlerterSettings)]
)
def test_every_env_var_is_documented_exactly_once(name, cls):
    rows = env_rows(generated("common") + generated(name))
    wanted = [f.metadata["env"] for f in dataclasses.fields(cls)]
    assert sorted(rows) == sorted(wanted), "each of the service's env vars in one row of its tables or the common one"


def test_env_vars_are_documented_in_configuration_md_only():
    for page in PAGES:
        if page.name != "configuration.md":
            assert not env_rows(page.read_text()), f"{page.relative_to(ROOT)}: env vars belong in configuration.md"
