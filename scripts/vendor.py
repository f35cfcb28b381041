"""Copy the pinned browser libraries from node_modules into the worker's static folder.

Run `npm ci --ignore-scripts` first. The copies are committed, so running numcast needs no npm; this
script (and the test that compares its output with package.json) keeps them honest.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "services" / "worker" / "numcast_worker" / "static" / "vendor"
# package -> the files the dashboard loads (all ES modules or CSS, no build step)
FILES = {
    "socket.io-client": ["dist/socket.io.esm.min.js"],
    "uplot": ["dist/uPlot.esm.js", "dist/uPlot.min.css"],
}


def main() -> int:
    """Copy the files and their licences, and record name, version and licence in vendor.json."""
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]
    record = {}
    TARGET.mkdir(parents=True, exist_ok=True)
    for name, files in FILES.items():
        package = ROOT / "node_modules" / name
        meta = json.loads((package / "package.json").read_text())
        if meta["version"] != pinned[name]:
            print(f"{name} {meta['version']} installed, {pinned[name]} pinned: run npm ci", file=sys.stderr)
            return 1
        for file in files:
            data = (package / file).read_bytes()
            if file.endswith(".js"):  # the source maps are not vendored: no reference to a file that is not served
                data = re.sub(rb"\n//# sourceMappingURL=\S+\s*$", b"\n", data)
            (TARGET / Path(file).name).write_bytes(data)
        shutil.copyfile(package / "LICENSE", TARGET / f"{name}.LICENSE")
        record[name] = {
            "version": meta["version"],
            "license": meta["license"],
            "files": [Path(f).name for f in files],
        }
    (TARGET / "vendor.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    names = ", ".join(f"{name}@{info['version']}" for name, info in record.items())
    print(f"vendored {names} into {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
