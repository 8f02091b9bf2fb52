"""JSON Lines reading with errors that name the file and the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path, hint: str = "") -> list[dict[str, Any]]:
    """Rows of a JSONL file (blank lines skipped); a bad line raises naming file and line."""
    path = Path(path)
    rows = []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not a JSON line ({err.msg}){hint}") from None
    return rows
