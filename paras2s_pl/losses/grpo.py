r"""GRPO maths of the dual-stream policy (paper §4.3 eq. 3, A.5 eq. 4), as pure functions.

Three steps, no Lightning and no model in here:

1. :func:`group_advantages`: group-normalised advantages from raw rewards, with the
   robustness rules (non-finite rewards dropped, all-equal groups give zero advantage).
2. :func:`grpo_loss` (one stream) / :func:`dual_stream_grpo_loss` (text + audio): the
   clipped surrogate minus the k3 KL to the reference, masked and aggregated.
3. :func:`entropy_from_logits`: masked mean entropy, for logging.

For splitting a rollout into micro-batches, :func:`loss_denominator` gives the full batch's
denominator (see "Micro-batches" in :func:`grpo_loss`). Try it::

    python -c "import torch; from paras2s_pl.losses.grpo import *; \
a, s = group_advantages(torch.tensor([1., 2., 3., 3.]), torch.tensor([0, 0, 0, 1])); \
lp = torch.zeros(4, 2, requires_grad=True); \
print(a, s['frac_reward_zero_std'], grpo_loss(lp, None, lp.detach(), a, torch.ones(4, 2)))"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

Scale = Literal["group", "batch", "none"]
Aggregation = Literal["grpo", "dapo", "dr_grpo"]
Combine = Literal["tokens", "positions"]
SCALES = ("group", "batch", "none")
AGGREGATIONS = ("grpo", "dapo", "dr_grpo")
COMBINES = ("tokens", "positions")


# ---- advantages ----------------------------------------------------------------------------


def group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    eps: float = 1e-4,
    scale: Scale = "group",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""Group-relative advantages ``Â_i = (r_i − mean_g) / (std_g + eps)`` (paper §4.3).

    Groups are the responses sharing a ``group_ids`` value (the prompt's id, so the
    responses may come in any order). Per group ``g`` over its *valid* (finite) rewards::

        mean_g = 1/n_g Σ r_i            std_g = sqrt(1/(n_g − 1) Σ (r_i − mean_g)²)  (Bessel)
        scale="group":  Â_i = (r_i − mean_g) / (std_g + eps)
        scale="batch":  Â_i = (r_i − mean_g) / (std_batch + eps)   std over all valid rewards
        scale="none":   Â_i =  r_i − mean_g                        (Dr. GRPO)

    Rules (the loss never sees a NaN):

    - a non-finite reward (NaN, ±inf) is dropped: it takes no part in ``mean_g``/``std_g``,
      its advantage is 0 and ``stats["valid"]`` is False there. Its response still has a KL
      term in the loss unless the caller also masks it out: pass
      ``mask & stats["valid"][:, None]`` to :func:`grpo_loss` so it contributes nothing.
    - a group whose valid rewards are all equal, or that has fewer than two valid rewards
      (size 1), gives exactly 0 advantage (not ``float error / eps``) and is counted in
      ``frac_reward_zero_std``: it carries no learning signal.

    Args:
        rewards: (N,) raw rewards, any float dtype (computed in at least float32).
        group_ids: (N,) integer id of each response's prompt.
        eps: added to the std (TRL's 1e-4).
        scale: ``"group"`` (paper), ``"batch"`` or ``"none"``.

    Returns:
        ``(advantages, stats)``: (N,) float32 advantages (no gradient) and detached stats:
        ``valid`` (N,) bool, the one non-scalar entry (pop it before logging);
        scalars ``reward`` (mean valid reward), ``reward_std`` (mean within-group std over
        groups with ≥ 2 valid rewards), ``frac_reward_zero_std`` (fraction of groups without
        signal), ``num_nonfinite``, ``advantage_std`` (over valid responses).

    Raises:
        ValueError: unknown ``scale`` or mismatched shapes.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if rewards.ndim != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must both be (N,), got {tuple(rewards.shape)} and "
            f"{tuple(group_ids.shape)}"
        )
    r = rewards.detach().to(torch.promote_types(rewards.dtype, torch.float32))  # (N,)
    valid = torch.isfinite(r)  # (N,)
    rv = torch.where(valid, r, 0.0)  # (N,) dropped rewards read as 0 below, then masked
    _, gid = torch.unique(group_ids, return_inverse=True)  # (N,) group index 0..G-1
    num_groups = int(gid.max()) + 1 if gid.numel() else 0
    zeros = r.new_zeros(num_groups)  # (G,)
    n_g = zeros.index_add(0, gid, valid.to(r.dtype))  # (G,) valid rewards per group
    mean_g = zeros.index_add(0, gid, rv) / n_g.clamp(min=1)  # (G,)
    dev = torch.where(valid, rv - mean_g[gid], 0.0)  # (N,) r_i − mean_g
    std_g = (zeros.index_add(0, gid, dev**2) / (n_g - 1).clamp(min=1)).sqrt()  # (G,)
    hi = zeros.scatter_reduce(0, gid, torch.where(valid, r, -torch.inf), "amax", include_self=False)
    lo = zeros.scatter_reduce(0, gid, torch.where(valid, r, torch.inf), "amin", include_self=False)
    flat_g = (n_g < 2) | (hi == lo)  # (G,) no learning signal
    if scale == "group":
        denom = std_g[gid] + eps  # (N,)
    elif scale == "batch":
        denom = _std(r[valid]) + eps  # ()
    else:
        denom = torch.ones((), dtype=r.dtype, device=r.device)  # ()
    keep = valid & ~flat_g[gid]  # (N,)
    adv = torch.where(keep, dev / denom, 0.0).float()  # (N,)
    signal_g = n_g >= 2  # (G,)
    stats = {
        "valid": valid,
        "reward": rv.sum() / valid.sum().clamp(min=1),
        "reward_std": (std_g * signal_g).sum() / signal_g.sum().clamp(min=1),
        "frac_reward_zero_std": flat_g.float().sum() / max(num_groups, 1),
        "num_nonfinite": (~valid).sum().float(),
        "advantage_std": _std(adv[valid]),
    }
    return adv, stats


def _std(x: torch.Tensor) -> torch.Tensor:
    """Bessel-corrected std of a 1-D tensor; 0 (not NaN) with fewer than two entries."""
    if x.numel() < 2:
        return x.new_zeros(())
    return x.std()


# ---- loss ----------------------------------------------------------------------------------


class StreamTensors(NamedTuple):
    """One stream's per-token tensors of a batch of N responses, each (N, T).

    ``logp`` are the policy's recomputed log-probs of the sampled tokens (with gradients);
    ``old_logp`` the sampling policy's (``None``: on-policy, ``logp.detach()``); ``ref_logp``
    the frozen reference's (``None`` only with β = 0); ``mask`` True (or 1) on the tokens
    that carry loss. Values off the mask are never read (NaN there is fine).
    """

    logp: torch.Tensor
    old_logp: torch.Tensor | None
    ref_logp: torch.Tensor | None
    mask: torch.Tensor


class _Terms(NamedTuple):
    """Per-token terms of one stream (all (N, T); ``surrogate`` and ``k3`` carry gradients)."""

    surrogate: torch.Tensor
    k3: torch.Tensor
    mask: torch.Tensor
    ratio: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor


def _token_terms(
    s: StreamTensors, advantages: torch.Tensor, clip_low: float, clip_high: float
) -> _Terms:
    """Clipped surrogate, k3 KL and clip indicators per token of one stream."""
    mask = s.mask.bool()  # (N, T)
    if s.logp.shape != mask.shape or advantages.shape != mask.shape[:1]:
        raise ValueError(
            f"logp and mask must be (N, T) and advantages (N,), got {tuple(s.logp.shape)}, "
            f"{tuple(mask.shape)}, {tuple(advantages.shape)}"
        )
    logp = s.logp.float()  # (N, T)
    old = logp.detach() if s.old_logp is None else s.old_logp.detach().float()  # (N, T)
    adv = advantages.detach().float()[:, None]  # (N, 1)
    ratio = torch.where(mask, logp - old, 0.0).exp()  # (N, T) ρ; 1 off the mask, never inf
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high)  # (N, T)
    surrogate = torch.minimum(ratio * adv, clipped * adv)  # (N, T)
    if s.ref_logp is None:
        k3 = torch.zeros_like(logp)  # (N, T)
    else:
        x = torch.where(mask, s.ref_logp.detach().float() - logp, 0.0)  # (N, T) log π_ref/π_θ
        k3 = x.exp() - x - 1  # (N, T) ≥ 0, 0 where π_θ = π_ref
    with torch.no_grad():
        low = mask & (ratio < 1 - clip_low) & (adv < 0)  # (N, T) clip binds from below
        high = mask & (ratio > 1 + clip_high) & (adv > 0)  # (N, T) clip binds from above
    return _Terms(surrogate, k3, mask, ratio.detach(), low, high)


def _aggregate(
    values: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    aggregation: Aggregation,
    denominator: torch.Tensor | float | None,
) -> torch.Tensor:
    """Reduce per-token values of one or more streams (each (N, T_s)) to a scalar.

    A response's tokens are the union of its masked tokens on all streams. ``grpo``: Σ over
    responses of (response's token sum ÷ its token count), ÷ non-empty responses. ``dapo``:
    token sum ÷ token count. ``dr_grpo``: token sum ÷ (non-empty responses × Σ_s T_s).
    ``denominator`` replaces the default one (the full batch's, for micro-batches).
    """
    per_sum = sum(
        torch.where(m, v, 0.0).sum(-1) for v, m in zip(values, masks, strict=True)
    )  # (N,)
    per_n = sum(m.sum(-1) for m in masks)  # (N,) active tokens per response
    nonempty = (per_n > 0).sum()  # ()
    if aggregation == "grpo":
        total = (per_sum / per_n.clamp(min=1)).sum()  # () Σ_i per-response means
        default = nonempty
    elif aggregation == "dapo":
        total, default = per_sum.sum(), per_n.sum()  # (), ()
    else:  # dr_grpo
        total, default = per_sum.sum(), nonempty * sum(m.shape[-1] for m in masks)  # (), ()
    denom = default if denominator is None else denominator
    return total / torch.as_tensor(denom, dtype=total.dtype, device=total.device).clamp(min=1)


def _masked_mean(
    x: torch.Tensor | Sequence[torch.Tensor], m: Sequence[torch.Tensor] | torch.Tensor
):
    """Detached mean of ``x`` over ``m``'s True entries (lists: pooled over streams); 0 if none."""
    xs, ms = ([x], [m]) if torch.is_tensor(x) else (x, m)
    num = sum(
        torch.where(mi, xi.detach().float(), 0.0).sum() for xi, mi in zip(xs, ms, strict=True)
    )
    return num / sum(mi.sum() for mi in ms).clamp(min=1)


def _check_options(aggregation: str, clip_eps: float, clip_eps_high: float | None) -> float:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    clip_high = clip_eps if clip_eps_high is None else clip_eps_high
    if not (0 <= clip_eps < 1 and clip_high >= 0):
        raise ValueError(
            f"need 0 <= clip_eps < 1 and clip_eps_high >= 0, got {clip_eps}, {clip_high}"
        )
    return clip_high


def _loss_and_stats(
    streams: Sequence[tuple[StreamTensors, float]],
    advantages: torch.Tensor,
    clip_eps: float,
    clip_eps_high: float | None,
    aggregation: Aggregation,
    denominator: torch.Tensor | float | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Shared body: every stream's tokens are loss terms of their response (union)."""
    clip_high = _check_options(aggregation, clip_eps, clip_eps_high)
    for s, beta in streams:
        if s.ref_logp is None and beta != 0:
            raise ValueError(f"ref_logp is None but beta={beta}: the KL term needs π_ref log-probs")
    terms = [_token_terms(s, advantages, clip_eps, clip_high) for s, _ in streams]
    masks = [t.mask for t in terms]
    objective = [
        t.surrogate - beta * t.k3 for t, (_, beta) in zip(terms, streams, strict=True)
    ]  # (N, T_s)
    loss = -_aggregate(objective, masks, aggregation, denominator)  # ()
    with torch.no_grad():
        policy_loss = -_aggregate([t.surrogate for t in terms], masks, aggregation, denominator)
        low = _masked_mean([t.low.float() for t in terms], masks)
        high = _masked_mean([t.high.float() for t in terms], masks)
        stats = {
            "policy_loss": policy_loss,
            "kl": _masked_mean([t.k3 for t in terms], masks),
            "clip_ratio/low_mean": low,
            "clip_ratio/high_mean": high,
            "clip_ratio/region_mean": low + high,  # a token is never clipped both ways
            "ratio_mean": _masked_mean([t.ratio for t in terms], masks),
        }
    return loss, stats


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    beta: float = 0.2,
    aggregation: Aggregation = "grpo",
    denominator: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""GRPO loss of one token stream: ``loss = −J`` with J the paper's eq. 3.

    Per active token ``(i, t)`` (``mask[i, t]``), with ``ρ = exp(logp − old_logp)`` and
    ``x = ref_logp − logp`` (paper eq. 4, the k3 estimator of KL(π_θ ‖ π_ref))::

        j_it = min(ρ·Â_i, clip(ρ, 1 − clip_eps, 1 + clip_eps_high)·Â_i) − β·(e^x − x − 1)

    aggregated over the N responses (``n_i`` = active tokens of response i, ``N'`` = responses
    with n_i > 0, ``T`` = the tensors' length)::

        grpo    (paper)  J = 1/N' Σ_i 1/n_i Σ_t j_it     mean per response, then over responses
        dapo             J = Σ_it j_it / Σ_i n_i         mean over all tokens
        dr_grpo          J = Σ_it j_it / (N'·T)          constant per-token weight

    A response without active tokens contributes nothing (not even to N') and never NaN;
    values off the mask are not read. Gradients reach ``logp`` only: ``old_logp``,
    ``ref_logp`` and ``advantages`` are detached here. Everything is computed in float32.

    **Why the loss is ≈ 0 at the first update while the gradient is not.** With one update
    per rollout ``old_logp = logp.detach()`` (pass ``None``): ρ = exp(logp − sg(logp)) is 1 in
    value, the clip is inactive (1 ∈ [1 − ε, 1 + ε_high]) and ``min(ρÂ, clip(ρ)Â) = Â``; but
    ∇ρ = ρ·∇logp = ∇logp, so the policy gradient is the REINFORCE one,
    ``∇loss = −1/N' Σ_i Â_i/n_i Σ_t ∇logp_it`` ("grpo"). The value is
    ``−1/N' Σ_i Â_i + β·KL``: the first term is 0 because advantages are centred in each
    group (exactly 0 for "grpo" with whole groups in the batch; token-weighted and not 0 for
    "dapo"/"dr_grpo"), and the KL starts at 0 (policy = reference at step 0) and grows only
    as the policy drifts. So a flat loss curve near 0 is expected: watch reward and ``kl``.

    **Micro-batches.** Split by whole responses. With the default denominator, "grpo" is
    invariant when the micro-batches hold equally many non-empty responses (the mean of
    their losses, which Lightning's gradient accumulation computes, is the full loss);
    "dr_grpo" likewise if they also share T; "dapo" is *not* (each micro-batch divides by
    its own token count, so a short response's tokens weigh more in a short micro-batch).
    Pass ``denominator=loss_denominator(full_batch_masks, aggregation)`` and the micro-batch
    losses (and gradients) *sum* to the full-batch ones for every aggregation and any split
    by whole responses (multiply by the number of micro-batches if the trainer averages).

    Args:
        logp: (N, T) policy log-probs of the sampled tokens, with gradients.
        old_logp: (N, T) sampling-time log-probs; ``None`` = ``logp.detach()``.
        ref_logp: (N, T) reference log-probs; ``None`` allowed only when ``beta == 0``.
        advantages: (N,) one advantage per response (:func:`group_advantages`).
        mask: (N, T) bool/0-1, True on tokens that carry loss.
        clip_eps: lower clip ε (ρ ≥ 1 − ε).
        clip_eps_high: upper clip (ρ ≤ 1 + ε_high), DAPO's clip-higher; ``None`` = ``clip_eps``.
        beta: KL weight β (paper 0.2).
        aggregation: ``"grpo"`` (paper), ``"dapo"`` or ``"dr_grpo"``.
        denominator: the aggregation's denominator of the full batch
            (:func:`loss_denominator`); ``None`` = this call's own.

    Returns:
        ``(loss, stats)``: scalar float32 loss with gradients, and detached 0-d tensors
        ``policy_loss`` (the surrogate part, ``loss = policy_loss + β·KL aggregated``), ``kl``
        (token mean of k3), ``clip_ratio/low_mean`` (ρ < 1 − ε with Â < 0),
        ``clip_ratio/high_mean`` (ρ > 1 + ε_high with Â > 0), ``clip_ratio/region_mean``
        (either), ``ratio_mean`` (token means).

    Raises:
        ValueError: bad shapes or options, or ``ref_logp=None`` with ``beta != 0``.
    """
    stream = StreamTensors(logp, old_logp, ref_logp, mask)
    return _loss_and_stats(
        [(stream, beta)], advantages, clip_eps, clip_eps_high, aggregation, denominator
    )


def _joint_stream(text: StreamTensors, audio: StreamTensors) -> StreamTensors:
    """One stream whose token at each position is the (text, audio) pair: log-probs add."""
    if text.mask.shape != audio.mask.shape:
        raise ValueError(
            f"combine='positions' needs aligned streams, got text {tuple(text.mask.shape)} and "
            f"audio {tuple(audio.mask.shape)}"
        )
    mt, ma = text.mask.bool(), audio.mask.bool()  # (N, T), (N, T)

    def add(t: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return torch.where(mt, t.float(), 0.0) + torch.where(ma, a.float(), 0.0)  # (N, T)

    old_t = text.logp.detach() if text.old_logp is None else text.old_logp  # (N, T)
    old_a = audio.logp.detach() if audio.old_logp is None else audio.old_logp  # (N, T)
    has_ref = text.ref_logp is not None and audio.ref_logp is not None
    ref = add(text.ref_logp, audio.ref_logp) if has_ref else None  # (N, T)
    return StreamTensors(add(text.logp, audio.logp), add(old_t, old_a), ref, mt | ma)


def dual_stream_grpo_loss(
    text: StreamTensors,
    audio: StreamTensors,
    advantages: torch.Tensor,
    *,
    beta_text: float = 0.2,
    beta_audio: float = 0.2,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    aggregation: Aggregation = "grpo",
    combine: Combine = "tokens",
    denominator: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""GRPO loss over **both** streams of each response (paper eq. 3 with A.5's KL).

    Each response has active tokens on the text stream (``text.mask``) and on the audio
    stream (``audio.mask``); both carry the response's one advantage. Two ways to combine:

    ``combine="tokens"`` (default): every active token of either stream is one term of
    :func:`grpo_loss`'s formula with its own ratio, clip and KL (β_text on text tokens,
    β_audio on audio tokens); a response's tokens are the union of both streams' tokens,
    so "grpo" is the mean over its ``n_text + n_audio`` tokens, then over responses, "dapo"
    divides by all active tokens of both streams and "dr_grpo" by ``N'·(T_text + T_audio)``.
    The streams may have different lengths.

    ``combine="positions"`` (eq. 3 read literally): the token at position n is the pair
    (a_n, t_n), ``log π(a_n, t_n) = log π(t_n) + log π(a_n)`` over the streams active there;
    one joint ratio (clipped jointly) and one joint k3 KL per position, and "grpo" averages
    over the response's active positions ``|m_text ∪ m_audio|``. One KL weight, so it needs
    ``beta_text == beta_audio``; the streams must be aligned (same (N, T)).

    At ratio 1 both give the same REINFORCE direction per token, weighted
    ``Â_i/(n_text + n_audio)`` ("tokens") vs ``Â_i/n_positions`` ("positions"); they
    differ once the ratio moves (per-token vs joint clipping) and in the KL estimator.

    Args:
        text: the text stream's :class:`StreamTensors`.
        audio: the audio stream's :class:`StreamTensors`.
        advantages: (N,) one advantage per response.
        beta_text: KL weight on text tokens.
        beta_audio: KL weight on audio tokens.
        clip_eps: lower clip ε.
        clip_eps_high: upper clip; ``None`` = ``clip_eps``.
        aggregation: ``"grpo"`` (paper), ``"dapo"`` or ``"dr_grpo"``.
        combine: ``"tokens"`` or ``"positions"`` (above).
        denominator: the full batch's denominator,
            ``loss_denominator([text.mask, audio.mask], aggregation, combine)``.

    Returns:
        ``(loss, stats)`` as :func:`grpo_loss`, plus ``kl/text`` and ``kl/audio`` (each
        stream's token mean of its own k3). ``kl`` is the token mean of the k3 terms in the
        loss (both streams' tokens, or the joint per-position k3).
    """
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
    if combine == "tokens":
        streams = [(text, beta_text), (audio, beta_audio)]
    elif beta_text != beta_audio:
        raise ValueError(
            f"combine='positions' has one joint KL term: set beta_text == beta_audio "
            f"(got {beta_text}, {beta_audio}) or use combine='tokens'"
        )
    else:
        streams = [(_joint_stream(text, audio), beta_text)]
    loss, stats = _loss_and_stats(
        streams, advantages, clip_eps, clip_eps_high, aggregation, denominator
    )
    with torch.no_grad():
        for name, s in (("text", text), ("audio", audio)):
            if s.ref_logp is None:
                stats[f"kl/{name}"] = torch.zeros((), device=s.logp.device)
                continue
            x = torch.where(s.mask.bool(), s.ref_logp.float() - s.logp.float(), 0.0)  # (N, T)
            stats[f"kl/{name}"] = _masked_mean(x.exp() - x - 1, s.mask.bool())
    return loss, stats


def loss_denominator(
    masks: torch.Tensor | Sequence[torch.Tensor],
    aggregation: Aggregation,
    combine: Combine = "tokens",
) -> torch.Tensor:
    """The full batch's aggregation denominator, to pass to every micro-batch's loss call.

    Args:
        masks: (N, T) mask of a single stream, or the streams' masks ``[text, audio]``
            of the **whole** batch (all micro-batches).
        aggregation: as in :func:`grpo_loss`.
        combine: as in :func:`dual_stream_grpo_loss` (ignored for a single mask).

    Returns:
        0-d float tensor: non-empty responses ("grpo"), active tokens ("dapo") or
        non-empty responses × max terms per response ("dr_grpo").
    """
    _check_options(aggregation, 0.0, None)
    ms = [masks.bool()] if torch.is_tensor(masks) else [m.bool() for m in masks]
    if combine == "positions" and len(ms) > 1:
        ms = [torch.stack(ms).any(0)]
    per_n = sum(m.sum(-1) for m in ms)  # (N,)
    nonempty = (per_n > 0).sum()  # ()
    if aggregation == "grpo":
        return nonempty.float()
    if aggregation == "dapo":
        return per_n.sum().float()
    return (nonempty * sum(m.shape[-1] for m in ms)).float()


# ---- entropy -------------------------------------------------------------------------------


def entropy_from_logits(
    logits: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0, chunk_size: int = 1024
) -> torch.Tensor:
    """Mean entropy ``−Σ_v p_v log p_v`` of ``softmax(logits / temperature)`` over masked rows.

    Only the masked rows are gathered, and they are processed ``chunk_size`` at a time in
    float32, so memory stays (chunk_size, V). Ids masked to ``-inf`` (a restricted
    vocabulary) contribute 0, not NaN. Call under ``torch.no_grad()`` when only logging.

    Args:
        logits: (N, T, V) head logits (as the policy samples from them; pass its temperature).
        mask: (N, T) bool/0-1, True where the entropy counts.
        temperature: divides the logits first (the sampling temperature; 1 = raw).
        chunk_size: rows per float32 chunk.

    Returns:
        0-d float32 mean entropy in nats over the masked positions; 0 when none.
    """
    rows = logits[mask.bool()]  # (M, V)
    total = logits.new_zeros((), dtype=torch.float32)  # ()
    for chunk in rows.split(chunk_size):
        logp = torch.log_softmax(chunk.float() / temperature, dim=-1)  # (m, V)
        p = logp.exp()  # (m, V)
        total = total - (p * torch.where(p > 0, logp, 0.0)).sum()  # ()
    return total / max(rows.shape[0], 1)
