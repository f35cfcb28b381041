"""Write the README's env var tables from the settings classes (`--check`: only say whether they differ)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from numcast.settings import markdown_table
from numcast_alerter.settings import AlerterSettings
from numcast_control.settings import ControlSettings
from numcast_worker.settings import WorkerSettings

README = Path(__file__).resolve().parent.parent / "README.md"
TABLES = {"control": ControlSettings, "worker": WorkerSettings, "alerter": AlerterSettings}


def render(text: str) -> str:
    """`text` with each `<!-- settings:NAME -->` block replaced by the generated table."""
    for name, cls in TABLES.items():
        block = f"<!-- settings:{name} -->\n{markdown_table(cls)}\n<!-- /settings:{name} -->"
        pattern = re.compile(rf"<!-- settings:{name} -->(?:.*?<!-- /settings:{name} -->)?", re.DOTALL)
        text, found = pattern.subn(lambda _, block=block: block, text, count=1)
        if not found:
            raise SystemExit(f"README.md has no <!-- settings:{name} --> marker")
    return text


def main(argv: list[str]) -> int:
    """Rewrite README.md, or with --check exit 1 if it is out of date."""
    current = README.read_text()
    wanted = render(current)
    if "--check" in argv:
        if current != wanted:
            print("README.md's settings tables are out of date: run python scripts/settings_tables.py")
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
