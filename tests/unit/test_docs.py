"""The README and docs/: every link, anchor and path resolves, every env var and metric is documented exactly once,
and every example is a console block the integration test can run (tests/examples.py), or says why not."""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path

import pytest
import yaml
from examples import FENCE, PAGES, ROOT, blocks, fences, local, matches, parse

from numcast_alerter.settings import AlerterSettings
from numcast_control.settings import ControlSettings
from numcast_worker.settings import WorkerSettings

LINK = re.compile(r"\]\(([^)\s]+)\)|(?:src|href)=\"([^\"]+)\"")  # markdown links and images, HTML attributes


def prose(text: str) -> str:
    """`text` without fenced code blocks, whose lines are neither headings nor links."""
    return FENCE.sub("", text)


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


# A path into the repository, written anywhere in a page: in prose, in a table, in a command.
REPO_PATH = re.compile(r"(?<![\w./~-])((?:docs|infra|services|libs|bench|scripts|tests)/[\w.*/-]*[\w*/])")
LANGUAGES = {"console", "text", "json", "yaml", "python", "js", "toml"}


def repo_paths() -> list[tuple[Path, str]]:
    return sorted({(page, path) for page in PAGES for path in REPO_PATH.findall(page.read_text())})


@pytest.mark.parametrize("page,path", repo_paths(), ids=lambda item: item if isinstance(item, str) else item.name)
def test_every_path_a_page_names_exists(page, path):
    found = list(ROOT.glob(path)) if "*" in path else [ROOT / path] if (ROOT / path).exists() else []
    assert found, f"{page.relative_to(ROOT)}: {path}: no such file or folder"


def test_every_fence_names_its_language_and_commands_are_console_blocks():
    """A bare or shell fence would hide commands from the test that runs them: commands go in `console` blocks."""
    for page in PAGES:
        for line, language, _, _ in fences(page.read_text()):
            assert language in LANGUAGES, f"{page.relative_to(ROOT)}:{line}: fence ```{language}: one of {LANGUAGES}"
        marks = [line.lstrip() for line in page.read_text().splitlines() if line.lstrip().startswith("```")]
        assert all(re.fullmatch(r"```\w*", mark) for mark in marks), f"{page.relative_to(ROOT)}: text after a fence"
        assert len(marks) % 2 == 0, f"{page.relative_to(ROOT)}: a fence is never closed"


def test_every_console_block_is_commands_and_their_output():
    found = [block for page in PAGES for block in blocks(page)]
    assert len([block for block in found if not block.offline]) >= 10, "examples that run"
    for block in found:
        assert block.commands, f"{block.page.name}:{block.line}: an empty console block"


def test_a_console_block_must_start_with_a_command():
    with pytest.raises(ValueError, match="starts with a `\\$ ` command"):
        parse("curl localhost:8000\n", 1)
    (first, second) = parse("$ curl -s localhost:8000/api/x \\\n  -d '{}'\n{\"a\": 1}\n$ true\n", 10)
    assert (first.line, first.text, first.expected) == (10, "curl -s localhost:8000/api/x \\\n  -d '{}'", ['{"a": 1}'])
    assert (second.line, second.text, second.expected) == (13, "true", [])
    (script,) = parse("$ python3 - <<'EOF'\nprint(1)\n$ not a command\nEOF\n1\n", 1)
    assert (script.text, script.expected) == ("python3 - <<'EOF'\nprint(1)\n$ not a command\nEOF", ["1"])
    with pytest.raises(ValueError, match="never ends with EOF"):
        parse("$ python3 - <<EOF\nprint(1)\n", 1)


@pytest.mark.parametrize(
    "expected,output,same",
    [
        (['{"config":{"rate_hz":5.0}}'], '{"config":{"rate_hz":5.0}}\r\n', True),
        (
            ["HTTP/1.1 401 UNAUTHORIZED", "Content-Type: x"],
            "HTTP/1.1 401 UNAUTHORIZED\r\r\n\x1b[1mContent-Type\x1b[0m: x",
            True,
        ),
        (['{"config":{"rate_hz":5.0}}'], '{"config":{"rate_hz":50.0}}\n', False),  # the answer changed: it fails
        (['{"seq":…,"source":"control-…"}'], '{"seq":12,"source":"control-7f9c2a"}\n', True),
        (["a…"], "a\nb\n", False),  # … never crosses a line
        (["first", "...", "last"], "first\nlast\n", True),
        (["first", "...", "last"], "first\n1\n2\nlast\n", True),
        (["first", "...", "last"], "first\n1\n2\nlast\nmore\n", False),
        ([], "", True),
        ([], "something\n", False),  # a command the page shows as silent must stay silent
    ],
)
def test_an_output_matches_only_what_the_page_shows(expected, output, same):
    assert matches(expected, output) is same


def test_the_common_configmap_is_listed_key_by_key():
    """kubernetes.md's row for 06-configmap.yaml names every key the ConfigMap sets, and no other."""
    data = yaml.safe_load((ROOT / "infra" / "k8s" / "06-configmap.yaml").read_text())["data"]
    (row,) = [
        line for line in (ROOT / "docs" / "kubernetes.md").read_text().splitlines() if "`06-configmap.yaml`" in line
    ]
    assert re.findall(r"`([A-Z][A-Z0-9_]+)`", row) == list(data)


def test_the_default_ports_stand_for_the_stacks():
    ports = {"control": 1, "machine-1": 2, "machine-2": 3, "alerter": 4, "tcp-1": 5, "tcp-2": 6}
    text = "curl localhost:8000/a http://127.0.0.1:8082/ localhost:8090 --tcp-port 9001 -p 18000 :80001 8000.5"
    assert (
        local(text, ports) == "curl localhost:1/a http://127.0.0.1:3/ localhost:4 --tcp-port 5 -p 18000 :80001 8000.5"
    )
