"""Print the packages whose resolved version (stdin, ``pip freeze``) differs from a lock file.

Usage: ``pip freeze | python scripts/lock_diff.py requirements/lock.txt``.
"""

from __future__ import annotations

import sys
from pathlib import Path


def pins(lines: list[str]) -> dict[str, str]:
    """``name==version`` lines → {normalised name: version}; comments and blanks skipped."""
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


def main() -> None:
    """Compare stdin's pins with the lock's and print a table of the differences."""
    locked = pins(Path(sys.argv[1]).read_text().splitlines())
    latest = pins(sys.stdin.read().splitlines())
    rows = [
        (name, locked.get(name, "-"), latest.get(name, "-"))
        for name in sorted(set(locked) | set(latest))
        if locked.get(name) != latest.get(name)
    ]
    if not rows:
        print("  (no difference: the lock is the newest admitted set)")
        return
    width = max(len(r[0]) for r in rows)
    print(f"  {'package':<{width}}  {'lock':<14} newest")
    for name, old, new in rows:
        print(f"  {name:<{width}}  {old:<14} {new}")


if __name__ == "__main__":
    main()
