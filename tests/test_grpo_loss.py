"""GRPO maths (paras2s_pl/losses/grpo.py) on hand-computed numbers; CPU, well under a second.

Each test's docstring works its numbers by hand. Conventions used below: a log-ratio is
set as ``logp = old_logp + log ρ``, a KL argument as ``ref_logp = logp + x``, and
k3(x) = e^x − x − 1, so k3(0.5) = 1.648721 − 1.5 = 0.148721, k3(−0.5) = 0.606531 − 0.5
= 0.106531, k3(0) = 0. Run: ``pytest tests/test_grpo_loss.py -q``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from paras2s_pl.losses.grpo import (
    StreamTensors,
    dual_stream_grpo_loss,
    entropy_from_logits,
    group_advantages,
    grpo_loss,
    loss_denominator,
)

NAN = float("nan")
K3_HALF = math.exp(0.5) - 1.5  # k3(0.5) = 0.148721
K3_MHALF = math.exp(-0.5) - 0.5  # k3(-0.5) = 0.106531
EPS = 1e-4


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def leaf(*rows):
    return t(*rows).requires_grad_(True)


def close(actual, expected, tol=1e-5):
    """``actual`` (tensor) equals ``expected`` (number or nested list) to ``tol``."""
    expected = torch.tensor(expected, dtype=torch.float32)
    assert_close(actual.detach().float().reshape(expected.shape), expected, atol=tol, rtol=tol)


# ---- advantages ----------------------------------------------------------------------------


def test_group_advantages_by_hand_with_shuffled_ids():
    """Ids [7, 9, 7, 9, 7, 9]: group 7 = [1, 2, 6], group 9 = [4, 4, 5].

    g7: mean 3, deviations [−2, −1, 3], Bessel var (4 + 1 + 9)/2 = 7, std 2.645751.
    g9: mean 13/3, deviations [−1/3, −1/3, 2/3], var (1/9 + 1/9 + 4/9)/2 = 1/3, std 0.577350.
    Â = deviation / (std + 1e-4), written back in the shuffled order.
    """
    rewards = t(1.0, 4.0, 2.0, 4.0, 6.0, 5.0)
    adv, stats = group_advantages(rewards, torch.tensor([7, 9, 7, 9, 7, 9]))
    s7, s9 = math.sqrt(7) + EPS, math.sqrt(1 / 3) + EPS
    close(adv, [-2 / s7, -1 / 3 / s9, -1 / s7, -1 / 3 / s9, 3 / s7, 2 / 3 / s9])
    close(stats["reward"], 22 / 6)
    close(stats["reward_std"], (math.sqrt(7) + math.sqrt(1 / 3)) / 2)
    close(stats["frac_reward_zero_std"], 0.0)
    assert stats["valid"].all()


@pytest.mark.parametrize(
    ("scale", "denom"), [("group", math.sqrt(2) + EPS), ("batch", 2.0 + EPS), ("none", 1.0)]
)
def test_group_advantages_scales(scale, denom):
    """Rewards [1, 3, 5], groups [a, a, b]: centred [−1, 1, 0] (b is a singleton → 0).

    group: std_a = sqrt(((−1)² + 1²)/1) = sqrt(2); batch: std([1, 3, 5]) = 2; none: 1.
    """
    adv, stats = group_advantages(t(1.0, 3.0, 5.0), torch.tensor([0, 0, 1]), scale=scale)
    close(adv, [-1 / denom, 1 / denom, 0.0])
    close(stats["frac_reward_zero_std"], 0.5)  # the singleton group


def test_all_equal_group_gives_exact_zero_and_is_counted():
    """Group 0 = [2.9, 2.9, 2.9]; group 1 = [1, 2, 3]; group 2 = [4] (size 1).

    In float32, 2.9 − (3·2.9)/3 = −2.4e-7, which a naive (r − mean)/(std + 1e-4) turns into
    −0.0024; the rule gives exactly 0. Group 1: Â = [−1, 0, 1]/(1 + 1e-4). Zero-std groups:
    0 and 2 → frac 2/3. No NaN anywhere.
    """
    rewards = t(2.9, 2.9, 2.9, 1.0, 2.0, 3.0, 4.0)
    adv, stats = group_advantages(rewards, torch.tensor([0, 0, 0, 1, 1, 1, 2]))
    assert adv[:3].eq(0).all() and adv[6] == 0
    close(adv[3:6], [-1 / (1 + EPS), 0.0, 1 / (1 + EPS)])
    close(stats["frac_reward_zero_std"], 2 / 3)
    assert all(torch.isfinite(v).all() for v in stats.values())


def test_nonfinite_rewards_dropped_and_counted():
    """Group 0 = [1, NaN, 3], group 1 = [inf, 2, 5], group 2 = [−inf, 7].

    g0 valid [1, 3]: mean 2, std sqrt(2) → Â = [−1, 0, 1]/(sqrt(2) + 1e-4).
    g1 valid [2, 5]: mean 3.5, std sqrt(4.5) → Â = [0, −1.5, 1.5]/(sqrt(4.5) + 1e-4).
    g2 valid [7] only: zero advantage, counted as zero-std. 3 non-finite; reward mean of the
    valid ones (1 + 3 + 2 + 5 + 7)/5 = 3.6.
    """
    rewards = t(1.0, NAN, 3.0, math.inf, 2.0, 5.0, -math.inf, 7.0)
    adv, stats = group_advantages(rewards, torch.tensor([0, 0, 0, 1, 1, 1, 2, 2]))
    s0, s1 = math.sqrt(2) + EPS, math.sqrt(4.5) + EPS
    close(adv, [-1 / s0, 0.0, 1 / s0, 0.0, -1.5 / s1, 1.5 / s1, 0.0, 0.0])
    assert stats["valid"].tolist() == [True, False, True, False, True, True, False, True]
    close(stats["num_nonfinite"], 3.0)
    close(stats["reward"], 3.6)
    close(stats["frac_reward_zero_std"], 1 / 3)


def test_group_advantages_rejects_bad_input():
    with pytest.raises(ValueError, match="scale"):
        group_advantages(t(1.0), torch.tensor([0]), scale="global")
    with pytest.raises(ValueError, match="group_ids"):
        group_advantages(t(1.0, 2.0), torch.tensor([0]))


# ---- grpo_loss -----------------------------------------------------------------------------

# Two responses: R0 has 2 active tokens, R1 has 1 (its 2nd slot is padding, NaN).
MASK_21 = torch.tensor([[True, True], [True, False]])


@pytest.mark.parametrize(
    ("aggregation", "loss", "g0", "g1"),
    [
        ("grpo", -0.5, -1.5 / 4, 0.5 / 2),  # ÷ N' = 2 responses, each ÷ its n_i
        ("dapo", -2.5 / 3, -1.5 / 3, 0.5 / 3),  # ÷ 3 active tokens
        ("dr_grpo", -2.5 / 4, -1.5 / 4, 0.5 / 4),  # ÷ N'·T = 2·2
    ],
)
def test_ratio_one_loss_and_gradient(aggregation, loss, g0, g1):
    """old = logp.detach() (ρ = 1), ref = logp (KL 0), Â = [1.5, −0.5]; 3 active tokens.

    Per token j = ρ·Â: [1.5, 1.5 | −0.5]. grpo: (1.5 + (−0.5))/2 = 0.5 → loss −0.5, and
    ∂loss/∂logp = −Â_i/(N'·n_i) = [−1.5/4, −1.5/4 | 0.5/2]. dapo: 2.5/3, grad −Â_i/3.
    dr_grpo: 2.5/4, grad −Â_i/4. The padding slot gets gradient 0.
    """
    logp = leaf([-1.0, -2.0], [-0.5, NAN])
    out, stats = grpo_loss(
        logp, None, logp.detach(), t(1.5, -0.5), MASK_21, aggregation=aggregation
    )
    out.backward()
    close(out, loss)
    close(logp.grad, [[g0, g0], [g1, 0.0]])
    close(stats["ratio_mean"], 1.0)
    close(stats["kl"], 0.0)
    close(stats["policy_loss"], loss)


def test_first_update_loss_is_zero_but_gradient_is_not():
    """One group, rewards [1, 2, 3] → Â = [−1, 0, 1]/(1 + 1e-4); lengths [2, 1, 1]; ρ = 1.

    grpo: mean of per-response means = mean(Â) = 0 → loss 0, yet ∂/∂logp = −Â_i/(3 n_i)
    = [1/6, 1/6 | 0 | −1/3]/(1 + 1e-4). dapo weights by tokens: (−2 + 0 + 1)/4 = −0.25 →
    loss 0.25/(1 + 1e-4).
    """
    adv, _ = group_advantages(t(1.0, 2.0, 3.0), torch.tensor([0, 0, 0]))
    mask = torch.tensor([[True, True], [True, False], [True, False]])
    logp = leaf([-1.0, -2.0], [-0.3, 0.0], [-0.7, 0.0])
    loss, _ = grpo_loss(logp, None, logp.detach(), adv, mask)
    loss.backward()
    close(loss, 0.0)
    close(logp.grad, [[1 / 6 / (1 + EPS)] * 2, [0.0, 0.0], [-1 / 3 / (1 + EPS), 0.0]])
    dapo, _ = grpo_loss(logp, None, logp.detach(), adv, mask, aggregation="dapo")
    close(dapo, 0.25 / (1 + EPS))


@pytest.mark.parametrize(
    ("adv", "clip_high", "loss", "grad", "low", "high"),
    [
        # Â = +1: min(ρ, clip ρ) = [0.5, 1, 1.2]; only the ρ = 1.5 token is clipped (high).
        (1.0, None, -2.7 / 3, [-0.5 / 3, -1 / 3, 0.0], 0.0, 1 / 3),
        # Â = −1: min(−ρ, −clip ρ) = [−0.8, −1, −1.5]; only ρ = 0.5 is clipped (low).
        (-1.0, None, 3.3 / 3, [0.0, 1 / 3, 1.5 / 3], 1 / 3, 0.0),
        # Â = +1, clip-higher ε_high = 0.28: [0.5, 1, 1.28].
        (1.0, 0.28, -2.78 / 3, [-0.5 / 3, -1 / 3, 0.0], 0.0, 1 / 3),
    ],
)
def test_clipping_both_signs(adv, clip_high, loss, grad, low, high):
    """One response, ρ = [0.5, 1, 1.5], ε = 0.2 (clip range [0.8, 1.2]), β = 0.

    The gradient of an unclipped token is −ρ·Â/3 (∂ρ/∂logp = ρ); a clipped one gets 0.
    Â = +1 → loss −(0.5 + 1 + 1.2)/3 = −0.9; Â = −1 → loss (0.8 + 1 + 1.5)/3 = 1.1.
    """
    old = t([-1.0, -1.0, -1.0])
    logp = (old + torch.log(t([0.5, 1.0, 1.5]))).requires_grad_(True)
    out, stats = grpo_loss(
        logp, old, None, t(adv), torch.ones(1, 3), clip_eps_high=clip_high, beta=0.0
    )
    out.backward()
    close(out, loss)
    close(logp.grad, [grad])
    close(stats["clip_ratio/low_mean"], low)
    close(stats["clip_ratio/high_mean"], high)
    close(stats["clip_ratio/region_mean"], low + high)
    close(stats["ratio_mean"], 1.0)


def test_kl_zero_when_policy_equals_reference():
    """ref_logp = logp → x = 0 → k3 = e^0 − 0 − 1 = 0 and ∂k3/∂logp = 1 − e^0 = 0.

    With Â = 0 the whole loss and its gradient are 0 (β = 0.2 multiplies 0).
    """
    logp = leaf([-1.0, -2.0, -3.0])
    loss, stats = grpo_loss(logp, None, logp.detach().clone(), t(0.0), torch.ones(1, 3))
    loss.backward()
    close(loss, 0.0)
    close(stats["kl"], 0.0)
    close(logp.grad, [[0.0, 0.0, 0.0]])


def test_k3_value_and_gradient_by_hand():
    """x = ref − logp = [0.5, 0, −0.5], Â = 0, β = 0.2, one response of 3 tokens.

    k3 = [0.148721, 0, 0.106531], mean 0.085084 → loss = β·mean = 0.017017 (= −J).
    ∂loss/∂logp = β/3·(1 − e^x) = [0.2/3·(−0.648721), 0, 0.2/3·0.393469].
    """
    logp = leaf([-1.0, -2.0, -3.0])
    ref = logp.detach() + t([0.5, 0.0, -0.5])
    loss, stats = grpo_loss(logp, None, ref, t(0.0), torch.ones(1, 3), beta=0.2)
    loss.backward()
    mean_k3 = (K3_HALF + K3_MHALF) / 3
    close(stats["kl"], mean_k3)
    close(loss, 0.2 * mean_k3)
    close(stats["policy_loss"], 0.0)
    e = [0.2 / 3 * (1 - math.exp(x)) for x in (0.5, 0.0, -0.5)]
    close(logp.grad, [e])


@pytest.mark.parametrize("aggregation", ["grpo", "dapo", "dr_grpo"])
def test_empty_mask_response_contributes_nothing(aggregation):
    """R0 = 2 tokens (ρ = 1, Â = 2, x = 0.5 on its 1st token), R1 = no active token, NaN
    in its log-probs and advantage. The loss equals R0's alone (N' = 1, T = 2): grpo
    −(2·2 − 0.2·0.148721)/2, the same for dapo (2 tokens) and dr_grpo (1·2); finite
    gradients, exactly 0 on R1. A batch with no active token at all gives loss 0.
    """
    logp = leaf([-1.0, -2.0], [NAN, NAN])
    ref = logp.detach() + t([0.5, 0.0], [NAN, NAN])
    old = logp.detach()
    mask = torch.tensor([[True, True], [False, False]])
    loss, stats = grpo_loss(logp, old, ref, t(2.0, NAN), mask, aggregation=aggregation)
    loss.backward()
    close(loss, -(4 - 0.2 * K3_HALF) / 2)
    assert torch.isfinite(logp.grad).all() and logp.grad[1].eq(0).all()
    assert all(torch.isfinite(v) for v in stats.values())
    none, none_stats = grpo_loss(logp, old, ref, t(2.0, NAN), torch.zeros(2, 2, dtype=torch.bool))
    assert none.item() == 0 and all(v.item() == 0 for v in none_stats.values())


def test_micro_batch_split_by_hand():
    """R0: 1 token, Â = 3; R1: 2 tokens, Â = −3; ρ = 1, β = 0. Split [R0] | [R1].

    Full: grpo (3 − 3)/2 = 0 → loss 0; dapo (3 − 6)/3 = −1 → loss 1.
    grpo, default: micro losses −3 and 3, mean 0 = full (one response each): invariant.
    dapo, default: −3/1 = −3 and 6/2 = 3, mean 0 ≠ 1: NOT invariant.
    dapo with the full denominator 3: −3/3 + 6/3 = 1 = full (losses sum).
    """
    logp = t([-1.0, 0.0], [-1.0, -2.0])
    mask = torch.tensor([[True, False], [True, True]])
    adv = t(3.0, -3.0)

    def loss(rows, agg, denom=None):
        return grpo_loss(
            logp[rows],
            None,
            None,
            adv[rows],
            mask[rows],
            beta=0.0,
            aggregation=agg,
            denominator=denom,
        )[0]

    full_grpo, full_dapo = loss([0, 1], "grpo"), loss([0, 1], "dapo")
    close(full_grpo, 0.0)
    close(full_dapo, 1.0)
    close((loss([0], "grpo") + loss([1], "grpo")) / 2, 0.0)
    close((loss([0], "dapo") + loss([1], "dapo")) / 2, 0.0)  # ≠ full_dapo
    denom = loss_denominator(mask, "dapo")
    close(denom, 3.0)
    close(loss([0], "dapo", denom) + loss([1], "dapo", denom), 1.0)


def _random_batch(n=6, length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([1, 5, 3, 0, 2, 4])[:n]
    mask = torch.arange(length)[None] < lengths[:, None]  # (n, length)
    old = -torch.rand(n, length, generator=g) * 3
    logp = old + 0.4 * torch.randn(n, length, generator=g)  # ratios well outside [0.8, 1.2]
    ref = logp + 0.5 * torch.randn(n, length, generator=g)
    adv = torch.randn(n, generator=g)
    return logp, old, ref, adv, mask


@pytest.mark.parametrize("aggregation", ["grpo", "dapo", "dr_grpo"])
def test_micro_batch_losses_and_grads_sum_to_full_with_denominator(aggregation):
    """Random ratios (clipping active), β = 0.2, ragged lengths incl. an empty response,
    uneven split [0] | [1, 2, 3] | [4, 5]: with the full batch's denominator the micro
    losses and gradients sum to the full ones; without it (uneven split) they do not.
    """
    logp, old, ref, adv, mask = _random_batch()
    denom = loss_denominator(mask, aggregation)

    def run(rows, d):
        lp = logp[rows].clone().requires_grad_(True)
        out, _ = grpo_loss(
            lp, old[rows], ref[rows], adv[rows], mask[rows], aggregation=aggregation, denominator=d
        )
        out.backward()
        return out, lp.grad

    full, full_grad = run(list(range(6)), None)
    splits = [[0], [1, 2, 3], [4, 5]]
    parts = [run(rows, denom) for rows in splits]
    close(sum(p[0] for p in parts), full.item())
    close(torch.cat([p[1] for p in parts]), full_grad.tolist())
    plain = sum(run(rows, None)[0] for rows in splits) / len(splits)
    assert abs(plain.item() - full.item()) > 1e-3


def test_grpo_equal_split_is_invariant_without_denominator():
    """Rows 0-4 of the random batch (lengths [1, 5, 3, 0, 2]; R3 empty), split
    [R0, R3, R1] | [R2, R4]: each half holds 2 non-empty responses, so with the default
    denominators grpo's half losses are (L0 + L1)/2 and (L2 + L4)/2 and their mean is the
    full (L0 + L1 + L2 + L4)/4. dapo's halves divide by 6 and 5 tokens, the full by 11:
    their mean differs.
    """
    logp, old, ref, adv, mask = _random_batch()
    rows_all, halves = [0, 1, 2, 3, 4], ([0, 3, 1], [2, 4])

    def loss(rows):
        return grpo_loss(logp[rows], old[rows], ref[rows], adv[rows], mask[rows])[0]

    close((loss(halves[0]) + loss(halves[1])) / 2, loss(rows_all).item())
    dapo = [
        grpo_loss(logp[r], old[r], ref[r], adv[r], mask[r], aggregation="dapo")[0]
        for r in (rows_all, *halves)
    ]
    assert abs(((dapo[1] + dapo[2]) / 2 - dapo[0]).item()) > 1e-3


# ---- dual stream ---------------------------------------------------------------------------


def _dual():
    """N = 1, T = 3. Text active at positions 0, 1; audio at 1, 2 (audio delay 1).

    ρ: text [1, 1.1, ·], audio [·, 1.15, 1]; x = ref − logp: text [0.5, 0, ·], audio
    [·, 0, −0.5]; NaN on inactive slots; Â = 1.
    """
    text_lp = leaf([-1.0, -2.0, NAN])
    audio_lp = leaf([NAN, -1.5, -0.7])
    text = StreamTensors(
        text_lp,
        text_lp.detach() - torch.log(t([1.0, 1.1, 1.0])),
        text_lp.detach() + t([0.5, 0.0, 0.0]),
        torch.tensor([[True, True, False]]),
    )
    audio = StreamTensors(
        audio_lp,
        audio_lp.detach() - torch.log(t([1.0, 1.15, 1.0])),
        audio_lp.detach() + t([0.0, 0.0, -0.5]),
        torch.tensor([[False, True, True]]),
    )
    return text, audio


def test_dual_stream_tokens_by_hand():
    """combine="tokens", β_text = 0.2, β_audio = 0.1: 4 token terms (2 text + 2 audio).

    j = [1 − 0.2·0.148721, 1.1 | 1.15, 1 − 0.1·0.106531] = [0.970256, 1.1 | 1.15, 0.989347],
    mean over the response's 4 tokens 1.052401 → loss −1.052401; no clipping.
    kl = (0.148721 + 0.106531)/4, kl/text = 0.148721/2, kl/audio = 0.106531/2.
    ∂loss/∂logp_text[0] = −(ρÂ − β(1 − e^0.5))/4 = −(1 + 0.2·0.648721)/4;
    ∂loss/∂logp_audio[1] = −1.15/4.
    """
    text, audio = _dual()
    loss, stats = dual_stream_grpo_loss(text, audio, t(1.0), beta_text=0.2, beta_audio=0.1)
    loss.backward()
    terms = [1 - 0.2 * K3_HALF, 1.1, 1.15, 1 - 0.1 * K3_MHALF]
    close(loss, -sum(terms) / 4)
    close(stats["kl"], (K3_HALF + K3_MHALF) / 4)
    close(stats["kl/text"], K3_HALF / 2)
    close(stats["kl/audio"], K3_MHALF / 2)
    close(stats["clip_ratio/region_mean"], 0.0)
    close(text.logp.grad[0, 0], -(1 + 0.2 * (math.exp(0.5) - 1)) / 4)
    close(audio.logp.grad[0, 1], -1.15 / 4)
    assert text.logp.grad[0, 2] == 0 and audio.logp.grad[0, 0] == 0


def test_dual_stream_positions_by_hand():
    """combine="positions" (eq. 3 literally), β = 0.2: 3 positions, joint log-probs add.

    pos0 (text only): ρ = 1, x = 0.5 → 1 − 0.2·0.148721 = 0.970256
    pos1 (both): ρ = 1.1·1.15 = 1.265 > 1.2 → clipped to 1.2 (Â > 0), x = 0 → 1.2
    pos2 (audio only): ρ = 1, x = −0.5 → 1 − 0.2·0.106531 = 0.978694
    mean over 3 positions 1.049650 → loss −1.049650; clip high 1/3; the clipped position's
    tokens get gradient 0 (per-token combine would not clip either of them).
    """
    text, audio = _dual()
    loss, stats = dual_stream_grpo_loss(text, audio, t(1.0), combine="positions")
    loss.backward()
    close(loss, -(1 - 0.2 * K3_HALF + 1.2 + 1 - 0.2 * K3_MHALF) / 3)
    close(stats["clip_ratio/high_mean"], 1 / 3)
    close(stats["kl"], (K3_HALF + K3_MHALF) / 3)
    assert text.logp.grad[0, 1] == 0 and audio.logp.grad[0, 1] == 0
    close(audio.logp.grad[0, 2], -(1 - 0.2 * (1 - math.exp(-0.5))) / 3)
    with pytest.raises(ValueError, match="beta_text == beta_audio"):
        dual_stream_grpo_loss(text, audio, t(1.0), beta_audio=0.1, combine="positions")


@pytest.mark.parametrize("combine", ["tokens", "positions"])
def test_dual_stream_split_with_denominator(combine):
    """Two streams of random data, uneven split: the micro losses sum to the full one."""
    logp, old, ref, adv, mask = _random_batch(seed=1)
    lp2, old2, ref2, _, mask2 = _random_batch(seed=2)
    mask2 = mask2.roll(1, dims=1)  # audio delayed by one position

    def run(rows, d=None):
        text = StreamTensors(logp[rows], old[rows], ref[rows], mask[rows])
        audio = StreamTensors(lp2[rows], old2[rows], ref2[rows], mask2[rows])
        return dual_stream_grpo_loss(text, audio, adv[rows], combine=combine, denominator=d)[0]

    for agg in ("grpo", "dapo", "dr_grpo"):
        denom = loss_denominator([mask, mask2], agg, combine)
        full = dual_stream_grpo_loss(
            StreamTensors(logp, old, ref, mask),
            StreamTensors(lp2, old2, ref2, mask2),
            adv,
            combine=combine,
            aggregation=agg,
        )[0]
        parts = [
            dual_stream_grpo_loss(
                StreamTensors(logp[r], old[r], ref[r], mask[r]),
                StreamTensors(lp2[r], old2[r], ref2[r], mask2[r]),
                adv[r],
                combine=combine,
                aggregation=agg,
                denominator=denom,
            )[0]
            for r in ([0, 1], [2], [3, 4, 5])
        ]
        close(sum(parts), full.item())


# ---- gradients, entropy, errors ------------------------------------------------------------


@pytest.mark.parametrize("combine", ["tokens", "positions"])
def test_gradients_flow_to_logp_only(combine):
    """old, ref and Â are leaves with requires_grad: the loss must not reach them (their
    .grad stays None) while logp gets a non-zero gradient; stats carry no graph.
    """
    logp, old, ref, adv, mask = (x.clone() for x in _random_batch())
    logp.requires_grad_(True)
    for x in (old, ref, adv):
        x.requires_grad_(True)
    loss, stats = grpo_loss(logp, old, ref, adv, mask)
    s = StreamTensors(logp, old, ref, mask)
    loss2, stats2 = dual_stream_grpo_loss(s, s, adv, combine=combine)
    (loss + loss2).backward()
    assert old.grad is None and ref.grad is None and adv.grad is None
    assert logp.grad.abs().sum() > 0
    assert not any(v.requires_grad for v in (*stats.values(), *stats2.values()))


def test_entropy_from_logits_by_hand():
    """Row a: logits [0, 0, 0, 0] → uniform over 4 → H = ln 4 = 1.386294.
    Row b: [0, 0, −inf, −inf] (restricted vocab) → ln 2 = 0.693147, not NaN.
    Row c is masked out (its huge logits must not count). Mean (ln 4 + ln 2)/2 = ln 8 / 2.
    Temperature 2 on row d = [0, 2·ln 3] → p ∝ [1, 3] → H = 0.562335.
    """
    inf = math.inf
    logits = t([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, -inf, -inf], [50.0, 0.0, 0.0, 0.0]])
    logits.requires_grad_(True)
    ent = entropy_from_logits(logits, torch.tensor([[True, True, False]]), chunk_size=1)
    ent.backward()
    close(ent, math.log(8) / 2)
    assert torch.isfinite(logits.grad).all()
    d = t([[[0.0, 2 * math.log(3)]]])
    close(
        entropy_from_logits(d, torch.ones(1, 1), temperature=2.0),
        -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)),
    )
    close(entropy_from_logits(d, torch.zeros(1, 1)), 0.0)


def test_loss_options_validated():
    lp = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="aggregation"):
        grpo_loss(lp, None, lp, t(1.0), torch.ones(1, 2), aggregation="token_mean")
    with pytest.raises(ValueError, match="ref_logp is None"):
        grpo_loss(lp, None, None, t(1.0), torch.ones(1, 2), beta=0.2)
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(lp, None, lp, t(1.0, 2.0), torch.ones(1, 2))


def test_loss_denominator_values():
    """Masks: text [[1,1,0],[0,0,0]], audio [[0,1,1],[0,0,0]]; R1 empty.

    tokens: grpo N' = 1, dapo 2 + 2 = 4, dr_grpo 1·(3 + 3) = 6; positions: grpo 1,
    dapo |∪| = 3, dr_grpo 1·3 = 3.
    """
    mt = torch.tensor([[1, 1, 0], [0, 0, 0]])
    ma = torch.tensor([[0, 1, 1], [0, 0, 0]])
    got = [loss_denominator([mt, ma], a).item() for a in ("grpo", "dapo", "dr_grpo")]
    assert got == [1.0, 4.0, 6.0]
    got = [loss_denominator([mt, ma], a, "positions").item() for a in ("grpo", "dapo", "dr_grpo")]
    assert got == [1.0, 3.0, 3.0]
