"""The ``paras2s`` command.

Lightning subcommands (``fit``, ``validate``, ``test``, ``predict``) come from
LightningCLI in subclass mode: the YAML picks the LightningModule and DataModule by
``class_path``; configs are read in omegaconf mode so they can interpolate::

    paras2s fit --config configs/mini/sft.yaml

Project subcommands sit beside them in :data:`COMMANDS` (group → name → function); their
options come from the functions' signatures and docstrings::

    paras2s shards build-demo --out shards/demo

``paras2s --help`` lists everything; every subcommand has ``--help``.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from paras2s_pl import __version__
from paras2s_pl.data.schema import SchemaError
from paras2s_pl.data.seed import SeedError

#: Errors caused by the user's input; their messages name the file, the field and the fix.
USER_ERRORS: tuple[type[Exception], ...] = (
    FileExistsError,
    FileNotFoundError,
    SeedError,
    SchemaError,
)

LIGHTNING_COMMANDS = {
    "fit": "train a model (SFT, reward model, GRPO) from a --config YAML",
    "validate": "run the validation loop of a --config YAML",
    "test": "run the test loop of a --config YAML",
    "predict": "run prediction with a --config YAML",
}


def shards_build_demo(
    out: Path = Path("shards/demo"),
    seed: int = 0,
    sample_rate: int = 16000,
    contents_per_category: int | None = None,
    test_fraction: float = 0.25,
    workers: int = 2,
    overwrite: bool = False,
    seed_files: list[str] | None = None,
    shard_size: int = 100,
) -> None:
    """Synthesise the mini-world shards (train/test demos and unlabeled RL prompts).

    Args:
        out: Output directory; refuses to replace existing shards unless --overwrite.
        seed: Seed of topic split, speaker choice and order; the same seed gives the same sets.
        sample_rate: Rate the audio is stored at (Hz).
        contents_per_category: Use at most this many seed contents per category (default: all).
        test_fraction: Fraction of each category's topics held out for test.
        workers: Synthesis processes.
        overwrite: Replace existing shards in --out.
        seed_files: Seed JSONL files to use instead of the shipped ones.
        shard_size: Samples per shard (more shards spread better over workers and ranks).
    """
    from paras2s_pl.data.demo import build_demo

    manifests = build_demo(
        out=out,
        seed=seed,
        sample_rate=sample_rate,
        contents_per_category=contents_per_category,
        test_fraction=test_fraction,
        workers=workers,
        overwrite=overwrite,
        seed_files=seed_files,
        shard_size=shard_size,
    )
    for split, m in manifests.items():
        print(
            f"{out}/{split}: {m['count']} samples, {m['hours'] * 60:.1f} min, "
            f"{len(m['shards'])} shard(s), skipped {sum(m['skipped'].values())}"
        )


def shards_inspect(path: Path, split: str = "train", limit: int = 0) -> None:
    """Read a shard split end to end and print its manifest summary and read statistics.

    Args:
        path: Directory holding ``<split>.manifest.json``.
        split: Split to read.
        limit: Print the metadata of this many samples.
    """
    import json

    from paras2s_pl.data.shards import ShardDataset, read_manifest

    manifest = read_manifest(path, split)
    ds = ShardDataset(path, split=split)
    for n, sample in enumerate(ds):
        if n < limit:
            print(sample.key, json.dumps(sample.meta.__dict__, ensure_ascii=False))
    summary = {k: manifest[k] for k in ("schema", "count", "hours", "label_balance", "speakers")}
    print(json.dumps(summary, indent=2))
    print("read:", json.dumps(ds.stats.as_dict()))


#: Project subcommands: group → name → function. Later stages add bench, curate, demo.
COMMANDS: dict[str, dict[str, Callable[..., object]]] = {
    "shards": {"build-demo": shards_build_demo, "inspect": shards_inspect},
}


def _help() -> str:
    lines = [
        f"paras2s {__version__}: ParaS2S benchmark and alignment (Lightning + HF)",
        "",
        "usage: paras2s <command> [options]   (each command has --help)",
        "",
        "Lightning commands (configs pick the module and data by class_path):",
    ]
    lines += [f"  {name:<22}{text}" for name, text in LIGHTNING_COMMANDS.items()]
    lines += ["", "Project commands:"]
    for group, commands in COMMANDS.items():
        for name, fn in commands.items():
            first = (fn.__doc__ or "").strip().splitlines()[0]
            lines.append(f"  {group + ' ' + name:<22}{first}")
    return "\n".join(lines)


def lightning_cli(args: list[str] | None = None, run: bool = True):
    """Build the LightningCLI (subclass mode, omegaconf parser) on ``args``."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    return LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def _bare_flags(fn: Callable[..., object], args: list[str]) -> list[str]:
    """Let boolean options be given bare (``--overwrite``), as users expect of a CLI."""
    flags = {
        f"--{name}"
        for name, p in inspect.signature(fn).parameters.items()
        if p.annotation in (bool, "bool")
    }
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        nxt = args[i + 1] if i + 1 < len(args) else "--"
        if arg in flags and nxt.startswith("--"):
            out.append("true")
    return out


def main(argv: list[str] | None = None) -> object:
    """Entry point of the ``paras2s`` console script."""
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(_help())
        return None
    if argv[0] == "--version":
        print(__version__)
        return None
    if argv[0] in COMMANDS:
        from jsonargparse import auto_cli

        group = COMMANDS[argv[0]]
        args = argv[1:]
        if args and args[0] in group:
            args = [args[0], *_bare_flags(group[args[0]], args[1:])]
        try:
            return auto_cli(group, args=args, prog=f"paras2s {argv[0]}", as_positional=False)
        except USER_ERRORS as err:  # a clear one-line error, not a traceback
            print(f"paras2s {' '.join(argv[:2])}: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
    if argv[0] in LIGHTNING_COMMANDS:
        return lightning_cli(None if from_sys else argv)
    print(f"paras2s: unknown command {argv[0]!r}\n\n{_help()}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
