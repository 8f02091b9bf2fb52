"""Grid specs (``--grid``, ``--set``, ``--tag``) read into points, and the points' names."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


def normalize_key(key: str) -> str:
    """LightningCLI's subclass-mode key: ``model.X`` → ``model.init_args.X`` (likewise ``data``).

    ``model.class_path``, keys already under ``init_args`` and every other key
    (``trainer.max_steps``, ``seed_everything``) are returned unchanged.

    Raises:
        ValueError: ``key`` is not a dotted name.
    """
    key = key.strip()
    if not _KEY.match(key):
        raise ValueError(f"{key!r} is not a config key; write it dotted, e.g. model.group_size")
    head, _, rest = key.partition(".")
    if head in ("model", "data") and rest:
        first = rest.split(".")[0]
        if first not in ("init_args", "class_path"):
            return f"{head}.init_args.{rest}"
    return key


def _split_spec(spec: str, option: str) -> tuple[str, str]:
    key, eq, value = str(spec).partition("=")
    if not eq or not key.strip():
        raise ValueError(f"{option} {spec!r}: write KEY=VALUE, e.g. {option} model.group_size=4")
    return key.strip(), value.strip()


def _split_key_spec(spec: str, option: str) -> tuple[str, str, str]:
    """``KEY=VALUE`` of a config-key option → (raw key, normalised key, value text)."""
    raw_key, text = _split_spec(spec, option)
    try:
        return raw_key, normalize_key(raw_key), text
    except ValueError as err:
        raise ValueError(f"{option} {spec!r}: {err}") from None


def _yaml(value: str, spec: str, option: str) -> Any:
    try:
        return yaml.safe_load(value) if value else None
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"{option} {spec!r}: the value is not YAML ({first})") from None


def parse_grid(specs: Sequence[str]) -> list[dict[str, Any]]:
    """The points of ``KEY=[V1,V2,...]`` specs: their cartesian product, in a stable order.

    Values are read with ``yaml.safe_load``; a scalar is a single value. Keys are
    normalised with :func:`normalize_key`. Points keep the specs' key order and vary the
    last spec fastest; no specs give one empty point.

    Raises:
        ValueError: a spec without ``=``, a bad key, YAML or empty list, or a repeated key.
    """
    axes: dict[str, list[Any]] = {}
    for spec in specs:
        raw_key, key, text = _split_key_spec(spec, "--grid")
        if key in axes:
            raise ValueError(f"--grid {spec!r}: {key} is already in another --grid; merge them")
        values = _yaml(text, spec, "--grid")
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ValueError(f"--grid {spec!r}: no values; write e.g. {raw_key}=[1,2]")
        axes[key] = values
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def grid_axes(points: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Each key's distinct values over ``points``, in first-seen order."""
    axes: dict[str, list[Any]] = {}
    for point in points:
        for key, value in point.items():
            seen = axes.setdefault(key, [])
            if value not in seen:
                seen.append(value)
    return axes


def parse_overrides(specs: Sequence[str] | None) -> list[tuple[str, str]]:
    """``KEY=VALUE`` overrides as (normalised key, value text); the text is passed on as is.

    Raises:
        ValueError: a spec without ``=``, a bad key or a repeated key.
    """
    out: dict[str, str] = {}
    for spec in specs or ():
        _, key, text = _split_key_spec(spec, "--set")
        if key in out:
            raise ValueError(f"--set {spec!r}: {key} is set twice; keep one")
        out[key] = text
    return list(out.items())


def parse_tags(specs: Sequence[str] | None) -> dict[str, Any]:
    """``NAME=VALUE`` labels (values yaml-parsed).

    Raises:
        ValueError: a spec without ``=`` or a repeated name.
    """
    tags: dict[str, Any] = {}
    for spec in specs or ():
        name, text = _split_spec(spec, "--tag")
        if name in tags:
            raise ValueError(f"--tag {spec!r}: tag {name} is given twice; keep one")
        tags[name] = _yaml(text, spec, "--tag")
    return tags


def format_value(value: Any) -> str:
    """A value as ``paras2s fit`` reads it: strings as is, the rest as JSON (``true``, ``null``)."""
    return value if isinstance(value, str) else json.dumps(value)


def _short(key: str) -> list[str]:
    """A key's parts without the ``model``/``data``/``trainer`` head and ``init_args``."""
    parts = [p for p in key.split(".") if p != "init_args"]
    return parts[1:] if len(parts) > 1 and parts[0] in ("model", "data", "trainer") else parts


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Short names of grid keys: the last part, or more of the path where two would clash."""
    names: dict[str, str] = {}
    for key in keys:
        parts = _short(key)
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            clash = [k for k in keys if k != key and ".".join(_short(k)[-n:]) == name]
            if not clash:
                break
        names[key] = name
    return names


def point_name(point: Mapping[str, Any], shorts: Mapping[str, str] | None = None) -> str:
    """A filesystem-safe name: ``group_size=2,beta=0.0`` (``base`` for the empty point)."""
    if not point:
        return "base"
    shorts = shorts or short_keys(list(point))
    text = [
        v if isinstance(v, str) else json.dumps(v, separators=(",", ":")) for v in point.values()
    ]
    safe = [_UNSAFE.sub("_", v) for v in text]
    return ",".join(f"{shorts[k]}={v}" for k, v in zip(point, safe, strict=True))


def point_names(points: Sequence[Mapping[str, Any]]) -> list[str]:
    """:func:`point_name` of every point, with short names shared by the whole grid.

    Raises:
        ValueError: two points would share a directory.
    """
    shorts = short_keys(list(grid_axes(points)))
    names = [point_name(p, shorts) for p in points]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(
                f"two grid points are both named {name!r} (values differing only in characters "
                "that are not filesystem-safe); change one of the --grid values"
            )
    return names
