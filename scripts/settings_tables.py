"""Write docs/configuration.md's env var tables from the settings classes (`--check`: only say whether they differ).

The settings every service reads (`numcast.settings.Common`) get one table; each service's table holds its own.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from numcast.settings import Common, markdown_table
from numcast_alerter.settings import AlerterSettings
from numcast_control.settings import ControlSettings
from numcast_worker.settings import WorkerSettings

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
TABLES = {
    "common": (Common, None),
    "control": (ControlSettings, Common),
    "worker": (WorkerSettings, Common),
    "alerter": (AlerterSettings, Common),
}


def render(text: str) -> str:
    """`text` with each `<!-- settings:NAME -->` block replaced by the generated table."""
    for name, (cls, without) in TABLES.items():
        block = f"<!-- settings:{name} -->\n{markdown_table(cls, without)}\n<!-- /settings:{name} -->"
        pattern = re.compile(rf"<!-- settings:{name} -->(?:.*?<!-- /settings:{name} -->)?", re.DOTALL)
        text, found = pattern.subn(lambda _, block=block: block, text, count=1)
        if not found:
            raise SystemExit(f"{PAGE.name} has no <!-- settings:{name} --> marker")
    return text


def main(argv: list[str]) -> int:
    """Rewrite the page, or with --check exit 1 if it is out of date."""
    current = PAGE.read_text()
    wanted = render(current)
    if "--check" in argv:
        if current != wanted:
            print(f"{PAGE.name}'s settings tables are out of date: run python scripts/settings_tables.py")
            return 1
        return 0
    PAGE.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
