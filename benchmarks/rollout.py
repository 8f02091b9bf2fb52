"""Rollout throughput: batched KV-cached generation vs cache-free generation, tiny policy.

Run::

    python benchmarks/rollout.py          # batch 1/8/32 x 64/256 new positions (~2 min, 2 cores)
    python benchmarks/rollout.py --quick  # batch 1/8 x 32/64 (seconds)

A "token" here is one generated position (one audio id + one text id, both heads sampled).
Prompts are left-padded random queries of 30-50 codes (2.4-4 s of speech at 12.5 Hz, the
mini world's typical query). Both heads sample with Kimi's shipped settings except the text
temperature (0.8, as in rollouts); the audio end ids are masked out so every row runs the full
length and both paths do the same work. Prints tokens/s of each path, ms per step and the
cached/cache-free ratio. Uses one CPU thread unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import time

import torch

from paras2s_pl.models.dual_stream import DualStreamConfig, DualStreamLM
from paras2s_pl.models.layout import build_prompt, collate
from paras2s_pl.models.sampling import SamplingConfig, generate


def prompts(cfg: DualStreamConfig, batch: int, device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    lengths = torch.randint(30, 51, (batch,), generator=g).tolist()
    examples = [build_prompt(torch.randint(0, 264, (n,), generator=g), cfg) for n in lengths]
    return {k: v.to(device) for k, v in collate(examples, cfg.text_blank_id, left_pad=True).items()}


def timed(model, batch, new_tokens: int, use_cache: bool, device: str) -> float:
    sampling = SamplingConfig(max_new_tokens=new_tokens, text_temperature=0.8, use_cache=use_cache)
    gen = torch.Generator(device=device).manual_seed(0)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = generate(
        model, batch["audio_ids"], batch["text_ids"], batch["attention_mask"], sampling, gen
    )
    if device == "cuda":
        torch.cuda.synchronize()
    assert out.audio_ids.shape[1] == new_tokens, "a row stopped early: the stop mask failed"
    return time.perf_counter() - start


def block_stop_ids(model: DualStreamLM) -> None:
    """Mask the audio end ids so every row generates ``max_new_tokens`` positions."""
    stop = torch.tensor(model.config.audio_stop_ids)

    def hook(_module, _inputs, logits):
        return logits.index_fill(-1, stop.to(logits.device), float("-inf"))

    model.mimo_output.register_forward_hook(hook)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 1/8 x 32/64 new tokens")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--new-tokens", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--device", default="cpu")
    # One thread: a 1.5M-parameter model gains little from intra-op threads, and spinning
    # OpenMP threads slow down 10x on a shared, busy CPU. 0 = torch's default.
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.quick:
        args.batches, args.new_tokens = [1, 8], [32, 64]
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = DualStreamConfig.tiny()
    model = DualStreamLM(cfg).to(args.device).eval()
    block_stop_ids(model)
    timed(model, prompts(cfg, 2, args.device), 8, True, args.device)  # warm-up
    timed(model, prompts(cfg, 2, args.device), 8, False, args.device)

    print(
        f"tiny policy ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params), "
        f"device={args.device}, threads={torch.get_num_threads()}"
    )
    header = f"{'batch':>5} {'new':>5} | {'cached tok/s':>12} {'ms/step':>8} | "
    header += f"{'no-cache tok/s':>14} {'ms/step':>8} | {'speed-up':>8}"
    print(header)
    print("-" * len(header))
    for new_tokens in args.new_tokens:
        for batch_size in args.batches:
            batch = prompts(cfg, batch_size, args.device)
            cached = timed(model, batch, new_tokens, True, args.device)
            fresh = timed(model, batch, new_tokens, False, args.device)
            tokens = batch_size * new_tokens
            print(
                f"{batch_size:>5} {new_tokens:>5} | {tokens / cached:>12.0f} "
                f"{1e3 * cached / new_tokens:>8.2f} | {tokens / fresh:>14.0f} "
                f"{1e3 * fresh / new_tokens:>8.2f} | {fresh / cached:>7.1f}x"
            )


if __name__ == "__main__":
    main()
