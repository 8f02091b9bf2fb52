"""Kimi-Audio checkpoints → the dual-stream policy, and the policy factory.

Kimi-Audio-7B (MoonshotAI/Kimi-Audio) ships its LM under its own parameter names;
:func:`convert_kimi_state_dict` renames them to :class:`DualStreamLM`'s (regexes in
:data:`KIMI_RENAMES`; the Whisper encoder and rotary buffers are skipped) and
:func:`load_kimi_checkpoint` builds the model and fills it, listing every missing,
unexpected or mis-shaped tensor. :func:`build_policy` is the one typed entry point that makes a
policy from a preset, a ``save_pretrained`` directory or a Kimi-Audio checkpoint.

Run ``python -m paras2s_pl.models.kimi_checkpoint --summary`` for parameter counts of the tiny
and Kimi-Audio-7B configurations, or ``--convert-kimi SRC DST`` to turn a Kimi-Audio checkpoint
(directory of safetensors) into :class:`DualStreamLM`'s ``save_pretrained`` format once;
afterwards ``DualStreamLM.from_pretrained(DST, dtype=torch.bfloat16)`` loads it
memory-efficiently.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from paras2s_pl.models.dual_stream import DualStreamConfig, DualStreamLM, count_parameters

log = logging.getLogger(__name__)

# Kimi-Audio name → ours (regex, first match wins). Everything else is "unexpected".
KIMI_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^model\.embed_tokens\.", "embed_tokens."),
    (r"^model\.layers\.(\d+)\.", r"layers.\1."),
    (r"^model\.norm\.", "norm."),
    (r"^lm_head\.", "lm_head."),
    (r"^model\.mimo_layers\.(\d+)\.", r"mimo_layers.\1."),
    (r"^model\.mimo_norm\.", "mimo_norm."),
    (r"^mimo_output\.", "mimo_output."),
    (r"^model\.vq_adaptor\.layers\.([034])\.", r"vq_adaptor.layers.\1."),
)
# Parts of a Kimi-Audio checkpoint that are not the LM (skipped, listed in the report).
KIMI_IGNORED = (r"^model\.whisper_encoder\.", r"rotary_emb\.inv_freq$")


class KimiCheckpointError(KeyError):
    """A Kimi-Audio checkpoint whose parameters do not match the config."""


def convert_kimi_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Kimi-Audio keys → :class:`DualStreamLM`'s; returns ``(renamed, unmapped, ignored)``."""
    renamed, unmapped, ignored = {}, [], []
    for key, tensor in state_dict.items():
        if any(re.search(p, key) for p in KIMI_IGNORED):
            ignored.append(key)
            continue
        for pattern, repl in KIMI_RENAMES:
            new, hits = re.subn(pattern, repl, key)
            if hits:
                renamed[new] = tensor
                break
        else:
            unmapped.append(key)
    return renamed, unmapped, ignored


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint file or a directory of ``*.safetensors`` (else ``*.bin``)."""
    from safetensors.torch import load_file

    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    if path.is_dir() and not files:
        files = sorted(path.glob("*.bin")) + sorted(path.glob("*.pt"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors, *.bin or *.pt checkpoint files")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        part = (
            load_file(str(file))
            if file.suffix == ".safetensors"
            else torch.load(file, map_location="cpu", weights_only=True)
        )
        state.update(part)
    return state


def load_kimi_checkpoint(
    path_or_state_dict: str | Path | Mapping[str, torch.Tensor],
    config: DualStreamConfig | None = None,
    *,
    strict: bool = True,
    dtype: torch.dtype | None = None,
) -> DualStreamLM:
    """Build a :class:`DualStreamLM` and fill it from a checkpoint with Kimi-Audio's names.

    Args:
        path_or_state_dict: a state dict, a checkpoint file, or a directory (its
            ``config.json`` gives the config when ``config`` is None).
        config: the architecture; must match the checkpoint's shapes.
        strict: raise :class:`KimiCheckpointError` listing missing and unexpected keys;
            when False they are logged and the missing ones keep their random init.
        dtype: cast the model to this dtype before loading (e.g. ``torch.bfloat16``).
    """
    if isinstance(path_or_state_dict, Mapping):
        state = path_or_state_dict
        if config is None:
            raise ValueError("load_kimi_checkpoint: pass config= when giving a state dict")
    else:
        path = Path(path_or_state_dict)
        if config is None:
            cfg_file = (path if path.is_dir() else path.parent) / "config.json"
            if not cfg_file.exists():
                raise FileNotFoundError(f"{cfg_file} missing; pass config=DualStreamConfig...")
            config = DualStreamConfig.from_kimi_config(json.loads(cfg_file.read_text()))
        state = read_state_dict(path)
    renamed, unmapped, ignored = convert_kimi_state_dict(state)
    model = DualStreamLM(config)
    if dtype is not None:
        model.to(dtype)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(unmapped + [k for k in renamed if k not in expected])
    shape_errors = [
        f"{k}: checkpoint {tuple(renamed[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in renamed
        if k in expected and renamed[k].shape != expected[k].shape
    ]
    if ignored:
        log.info(
            "load_kimi_checkpoint: skipped %d non-LM tensors (e.g. %s)", len(ignored), ignored[0]
        )
    problems = {"missing": missing, "unexpected": unexpected, "shape mismatch": shape_errors}
    report = "; ".join(f"{name} ({len(v)}): {v[:8]}" for name, v in problems.items() if v)
    if report and strict:
        raise KimiCheckpointError(f"Kimi-Audio checkpoint does not match the config: {report}")
    if report:
        log.warning("load_kimi_checkpoint (strict=False): %s", report)
    loadable = {k: v for k, v in renamed.items() if k in expected and v.shape == expected[k].shape}
    model.load_state_dict(loadable, strict=False)
    return model


def build_policy(
    preset: str = "tiny",
    pretrained: str | None = None,
    kimi_checkpoint: str | None = None,
    text_vocab_size: int = 512,
    codec_vocab_size: int = 264,
    dtype: str | None = None,
) -> DualStreamLM:
    """One typed entry point for configs (``class_path: ...kimi_checkpoint.build_policy``).

    Args:
        preset: ``"tiny"`` (mini world, random init) or ``"kimi_audio_7b"`` (architecture only).
        pretrained: a :meth:`DualStreamLM.save_pretrained` directory; wins over ``preset``.
        kimi_checkpoint: a Kimi-Audio checkpoint directory (its ``config.json`` + safetensors);
            converted on the fly with :func:`load_kimi_checkpoint`.
        text_vocab_size: ``len(tokenizer)`` for the tiny preset.
        codec_vocab_size: the codec's ``vocab_size`` for the tiny preset.
        dtype: e.g. ``"bfloat16"``; None keeps float32 (or the checkpoint's dtype).
    """
    torch_dtype = getattr(torch, dtype) if dtype else None
    if pretrained:
        return DualStreamLM.from_pretrained(pretrained, dtype=torch_dtype)
    if kimi_checkpoint:
        return load_kimi_checkpoint(kimi_checkpoint, dtype=torch_dtype)
    presets = {
        "tiny": lambda: DualStreamConfig.tiny(text_vocab_size, codec_vocab_size),
        "kimi_audio_7b": DualStreamConfig.kimi_audio_7b,
    }
    if preset not in presets:
        raise ValueError(f"build_policy: preset={preset!r}; choose one of {sorted(presets)}")
    model = DualStreamLM(presets[preset]())
    return model.to(torch_dtype) if torch_dtype else model


def main() -> None:
    """CLI: ``--summary`` or ``--convert-kimi SRC DST``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", action="store_true", help="parameter counts of the presets")
    ap.add_argument("--convert-kimi", nargs=2, metavar=("SRC", "DST"))
    args = ap.parse_args()
    if args.convert_kimi:
        src, dst = args.convert_kimi
        load_kimi_checkpoint(src, dtype=torch.bfloat16).save_pretrained(dst)
        print(f"wrote {dst}")
    else:
        for name, cfg in (
            ("tiny", DualStreamConfig.tiny()),
            ("kimi", DualStreamConfig.kimi_audio_7b()),
        ):
            print(name, {k: f"{v / 1e6:.2f}M" for k, v in count_parameters(cfg).items()})


if __name__ == "__main__":
    main()
