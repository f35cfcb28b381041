"""The console examples of README.md and docs/: found, run as a user types them, and compared with what they show.

The convention is docs/development.md's "Examples that run": a ```console block holds commands (`$ ` lines,
continued by a trailing `\\`) each followed by the output it shows; `…` in an output stands for any text within a
line and a line of `...` for any number of lines; the default ports stand for those of the stack under test; a
block after `<!-- offline: why -->` is not run.
"""

from __future__ import annotations

import dataclasses
import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "bench" / "README.md"])
OFFLINE = re.compile(r"<!-- offline: (.+?) -->\s*$")
FENCE = re.compile(r"^( *)```(\S*)[^\n]*\n(.*?)^\1```[ \t]*$", re.DOTALL | re.MULTILINE)  # indented in a list too
# The ports `numcast up` uses by default, as the docs write them: the test's stack has free ones instead.
DEFAULT_PORTS = {"control": 8000, "machine-1": 8081, "machine-2": 8082, "alerter": 8090, "tcp-1": 9001, "tcp-2": 9002}
PORT = re.compile(r"(?<![\w.])(8000|8081|8082|8090|9001|9002)(?![\w.])")
UP = re.compile(r"(numcast up|tox -e up)\s*")  # shown, not run: compared with what the test's `numcast up` printed
HEREDOC = re.compile(r"<<-?\s*'?(\w+)'?\s*$")  # a command ending in a here-document: `python3 - <<'EOF'`
STYLING = re.compile(r"\x1b\[[0-9;]*m")  # SGR escapes: curl prints header names in bold on a terminal
COMMAND_SECONDS = 15.0  # a command that has not shown its output by then fails
STREAMING_GRACE = 0.3  # a command whose output already matches and that has not ended by then is stopped


@dataclasses.dataclass
class Command:
    """One `$ ` command of a console block and the output the page shows for it."""

    line: int  # of the `$ ` in the page
    text: str
    expected: list[str]


@dataclasses.dataclass
class Block:
    """A ```console block of a page."""

    page: Path
    line: int  # of the opening fence
    commands: list[Command]
    offline: str  # why it is not run here; "" when it is


def fences(text: str) -> list[tuple[int, str, str, str]]:
    """(line of the fence, language, body, the offline reason before it or "") of each fenced block of `text`."""
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        offline = OFFLINE.search(before)
        indent = len(match.group(1))
        body = "".join(line[indent:] for line in match.group(3).splitlines(keepends=True))
        found.append((line, match.group(2), body, offline.group(1) if offline else ""))
    return found


def parse(body: str, first_line: int) -> list[Command]:
    """The commands of a console block's `body`, whose first line is line `first_line` of its page."""
    commands: list[Command] = []
    lines = body.splitlines()
    n = 0
    while n < len(lines):
        if not lines[n].startswith("$ "):
            raise ValueError(f"line {first_line + n}: a console block starts with a `$ ` command: {lines[n]!r}")
        start, parts = n, [lines[n][2:]]
        while parts[-1].endswith("\\") and n + 1 < len(lines):
            n += 1
            parts.append(lines[n])
        if heredoc := HEREDOC.search(parts[-1]):  # its lines, up to the word that ends it, are the command's
            while n + 1 < len(lines) and parts[-1] != heredoc.group(1):
                n += 1
                parts.append(lines[n])
            if parts[-1] != heredoc.group(1):
                raise ValueError(f"line {first_line + start}: the here-document never ends with {heredoc.group(1)}")
        n += 1
        expected = []
        while n < len(lines) and not lines[n].startswith("$ "):
            expected.append(lines[n])
            n += 1
        commands.append(Command(first_line + start, "\n".join(parts), expected))
    return commands


def blocks(page: Path) -> list[Block]:
    """Every console block of `page`."""
    return [
        Block(page, line, parse(body, line + 1), offline)
        for line, language, body, offline in fences(page.read_text())
        if language == "console"
    ]


def pattern(expected: list[str]) -> re.Pattern:
    """The regex an output must match whole: `…` is any text within a line, a line of `...` any lines or none."""
    parts = []
    for line in expected:
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.rstrip().split("…")) + r"\n")
    return re.compile("".join(parts))


def normal(output: str) -> str:
    """`output` as compared: text without a terminal's styling (bold, colours), its CR LF (or an HTTP header's CR
    CR LF) as LF, no trailing spaces, no trailing empty lines, one final LF."""
    text = re.sub(r"\r+\n", "\n", STYLING.sub("", output)).replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "".join(line + "\n" for line in lines)


def matches(expected: list[str], output: str) -> bool:
    """Whether `output` is what `expected` shows, whole."""
    return pattern(expected).fullmatch(normal(output)) is not None


def local(text: str, ports: dict[str, int]) -> str:
    """`text` with the default ports replaced by the stack's (`ports`: DEFAULT_PORTS' names to ports)."""
    by_default = {str(port): str(ports[name]) for name, port in DEFAULT_PORTS.items()}
    return PORT.sub(lambda m: by_default[m.group(1)], text)


@dataclasses.dataclass
class Stack:
    """What a run needs of the live stack: the folder holding `numcast-data/`, its ports, env and banner."""

    cwd: Path
    ports: dict[str, int]
    env: dict[str, str]
    banner: str


def run(command: Command, stack: Stack) -> str:
    """Run `command` as a user would in a terminal, in bash, after `. numcast-data/credentials.env`; its output.

    It runs in a pseudo-terminal, so that redis-cli and curl print what a user sees. A command that ends is judged
    on all it printed. One that goes on (`redis-cli subscribe`) is stopped, as a user presses Ctrl-C, once what it
    printed matches and it has not ended STREAMING_GRACE seconds later, and judged on what matched; one that never
    matches is stopped after COMMAND_SECONDS.
    """
    text = local(command.text, stack.ports)
    if UP.fullmatch(text):
        return stack.banner
    script = f". numcast-data/credentials.env\n{text}\n"
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        ["bash", "-c", script],
        cwd=stack.cwd,
        env=stack.env,
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    wanted = [local(line, stack.ports) for line in command.expected]
    output, shown, matched_at = b"", None, 0.0
    deadline = time.monotonic() + COMMAND_SECONDS
    try:
        while time.monotonic() < deadline:
            if select.select([primary], [], [], 0.05)[0]:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # EIO: every process holding the terminal has ended
                    chunk = b""
                if not chunk:
                    return output.decode(errors="replace")  # it ended: judged on all it printed
                output += chunk
                lines = output[: output.rfind(b"\n") + 1]  # whole lines only: half a line may match a `…`
                if shown is None and matches(wanted, lines.decode(errors="replace")):
                    shown, matched_at = lines, time.monotonic()
            if shown is not None and time.monotonic() - matched_at > STREAMING_GRACE:
                return shown.decode(errors="replace")  # it goes on (a subscription): judged on what matched
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        os.close(primary)
    return output.decode(errors="replace")


def check(block: Block, stack: Stack) -> list[str]:
    """Run each command of `block` in order; a report per command whose output is not what the page shows."""
    failures = []
    for command in block.commands:
        output = run(command, stack)
        wanted = [local(line, stack.ports) for line in command.expected]
        if not matches(wanted, output):
            failures.append(
                f"{block.page.name}:{command.line}: $ {command.text}\n"
                f"--- the page shows\n{chr(10).join(wanted)}\n--- it printed\n{normal(output)}"
            )
    return failures
