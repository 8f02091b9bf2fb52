"""A sweep's results: ``results.json`` / ``results.csv`` written and read, bench rows."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"


def read_bench_row(path: str | Path, system: str) -> dict[str, float | None] | None:
    """A system's Table-3 row (column → score) from a bench ``table.json`` or its directory.

    None when the file or the system is missing.
    """
    path = Path(path)
    path = path / "table.json" if path.is_dir() else path
    if not path.is_file():
        return None
    row = json.loads(path.read_text("utf-8")).get("table3", {}).get(system)
    return dict(row) if isinstance(row, dict) else None


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a sweep's ``results.json`` (give the file or the sweep's ``--out`` directory).

    Raises:
        FileNotFoundError: no results there.
    """
    path = Path(path)
    path = path / RESULTS_JSON if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no sweep results; run `paras2s sweep --out DIR` first")
    return json.loads(path.read_text("utf-8"))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def results_rows(results: Mapping[str, Any]) -> tuple[list[str], list[dict[str, str]]]:
    """The flat table of :func:`write_results`: header and one row per run."""
    runs = results.get("runs", [])
    keys: dict[str, list[str]] = {"param": [], "tag": [], "metric": [], "best": [], "bench": []}
    fields = {"param": "params", "tag": "tags", "metric": "metrics", "best": "best",
              "bench": "bench"}  # fmt: skip
    for kind, field in fields.items():
        for run in runs:
            for name in run.get(field) or {}:
                if name not in keys[kind]:
                    keys[kind].append(name)
    header = ["name", "status", "seconds", "global_step"]
    header += [f"{kind}:{name}" for kind, names in keys.items() for name in names]
    rows = []
    for run in runs:
        row = {k: _cell(run.get(k)) for k in header[:4]}
        for kind, field in fields.items():
            values = run.get(field) or {}
            row.update({f"{kind}:{name}": _cell(values.get(name)) for name in keys[kind]})
        rows.append(row)
    return header, rows


def write_results(out: Path, results: Mapping[str, Any]) -> None:
    """``<out>/results.json`` and the flat ``<out>/results.csv`` (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / RESULTS_JSON, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    header, rows = results_rows(results)
    tmp = out / (RESULTS_CSV + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / RESULTS_CSV)
