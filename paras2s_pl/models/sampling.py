"""Batched dual-stream generation and the log-prob recomputation that GRPO needs.

:func:`generate` continues left-padded prompts (:func:`paras2s_pl.models.layout.build_prompt`
+ ``collate(..., left_pad=True)``) one position per step, sampling **both** heads each step
(Kimi-Audio's rules, as its ``kimia_infer`` generation code applies them):

- audio is forced to ``blank`` for the first ``cfg.audio_delay`` steps;
- after the text head emits ``text_eos`` the text stream is latched to ``blank``;
- a row is finished once its audio head emits an end id (:attr:`DualStreamConfig.audio_stop_ids`);
  from then on both streams are forced to ``blank`` and the positions are masked out;
- generation stops when every row is finished or after ``max_new_tokens`` steps (those rows are
  ``truncated``).

**Sampler** (per stream, Kimi's order): optional repetition penalty over the last
``*_repetition_window`` generated ids of that stream (CTRL rule: logit/p if > 0 else logit*p),
divide by temperature, top-k, top-p, multinomial with ``generator``. Temperature
``<= 1e-6`` is argmax. With ``restrict_vocab`` (default) each head is first limited to its
stream's legal ids: text = text ids minus the prompt markers (keeps ``blank``/``text_eos``),
audio = codec code ids + audio end ids.

**Log-probs** (``Rollout.*_logprobs``) are the policy's, not the truncated sampler's:
``log_softmax(restrict(logits) / T)[token]`` with T the stream's temperature (``T = 1`` when
greedy), computed in float32 **without** the repetition penalty, top-k or top-p (those are
sampling heuristics; using the untruncated distribution keeps π_old, π_ref and π_θ comparable
and differentiable everywhere). Forced tokens (delay blanks, latched blanks, positions after the
end) get log-prob 0 and ``*_mask = False``; every sampled token, ``text_eos`` and the audio end
token included, has ``*_mask = True``. :func:`sequence_logprobs` recomputes exactly these numbers
with one forward pass over ``Rollout.full_*`` (gradients flow when enabled), so the GRPO ratio
is 1 at the first update.

Usage::

    prompts = collate([build_prompt(codes, model.config), ...], blank_id, left_pad=True)
    rollout = generate(model, prompts["audio_ids"], prompts["text_ids"],
                       prompts["attention_mask"], SamplingConfig(text_temperature=0.8), gen)
    texts = tok.batch_decode(response_text_ids(rollout, model.config))
    codes = response_codes(rollout, model.config)           # -> codec.decode(codes[i], texts[i])
    audio_lp, text_lp = rollout_logprobs(model, rollout, sampling_cfg)  # with gradients

The generator must live on the model's device; a list of them, one per row, makes each row's
sample independent of the batch it is in (GRPO: the same responses on 1 rank or n ranks).
``use_cache=False`` re-runs the full sequence each step (for tests and
:mod:`benchmarks.rollout`); results are identical up to float noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import torch

from paras2s_pl.models.dual_stream import DualStreamConfig, DualStreamLM

GREEDY_TEMPERATURE = 1e-6


@dataclass
class SamplingConfig:
    """Per-stream sampler settings; defaults are Kimi-Audio's shipped ones (text greedy)."""

    max_new_tokens: int = 256
    audio_temperature: float = 0.8
    audio_top_k: int = 10  # 0 = off
    audio_top_p: float = 1.0  # 1 = off
    audio_repetition_penalty: float = 1.0  # 1 = off
    audio_repetition_window: int = 64
    text_temperature: float = 0.0
    text_top_k: int = 5
    text_top_p: float = 1.0
    text_repetition_penalty: float = 1.0
    text_repetition_window: int = 16
    restrict_vocab: bool = True
    use_cache: bool = True

    def __post_init__(self):
        for stream in ("audio", "text"):
            top_p, penalty = (
                getattr(self, f"{stream}_top_p"),
                getattr(self, f"{stream}_repetition_penalty"),
            )
            if not 0 < top_p <= 1:
                raise ValueError(f"SamplingConfig.{stream}_top_p={top_p} must be in (0, 1]")
            if penalty <= 0:
                raise ValueError(
                    f"SamplingConfig.{stream}_repetition_penalty={penalty} must be > 0"
                )
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingConfig.max_new_tokens={self.max_new_tokens} must be >= 1")

    @property
    def temperatures(self) -> tuple[float, float]:
        """``(audio_temperature, text_temperature)``, the pair :func:`sequence_logprobs` takes."""
        return self.audio_temperature, self.text_temperature

    def greedy(self) -> SamplingConfig:
        """The same settings with both temperatures 0 (argmax)."""
        return replace(self, audio_temperature=0.0, text_temperature=0.0)


@dataclass
class Rollout:
    """Generated responses of a batch; response tensors are (B, T), T = steps run.

    ``full_audio_ids`` / ``full_text_ids`` / ``full_attention_mask`` (B, P+T) are prompt +
    response exactly as the model saw them (positions after a row's end token are masked
    out); ``response_start`` = P. ``lengths`` counts response positions up to and including
    the end token (T for truncated rows).
    """

    audio_ids: torch.Tensor
    text_ids: torch.Tensor
    audio_logprobs: torch.Tensor
    text_logprobs: torch.Tensor
    audio_mask: torch.Tensor
    text_mask: torch.Tensor
    finished: torch.Tensor
    truncated: torch.Tensor
    lengths: torch.Tensor
    full_audio_ids: torch.Tensor
    full_text_ids: torch.Tensor
    full_attention_mask: torch.Tensor
    response_start: int

    def select(self, index: torch.Tensor | slice | list[int]) -> Rollout:
        """Rows ``index`` of every tensor (micro-batching, filtering)."""
        picked = {
            f.name: getattr(self, f.name)[index] for f in fields(self) if f.name != "response_start"
        }
        return Rollout(**picked, response_start=self.response_start)

    def to(self, device: torch.device | str) -> Rollout:
        """A copy with every tensor on ``device``."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in moved.items()}
        return Rollout(**moved)


# ---- per-stream logits processing (shared by generate and sequence_logprobs) -------------


def legal_ids_mask(cfg: DualStreamConfig, stream: str, device=None) -> torch.Tensor:
    """(vocab_size,) bool: ids the ``stream`` ("audio" | "text") head may produce."""
    legal = torch.zeros(cfg.vocab_size, dtype=torch.bool, device=device)
    if stream == "text":
        legal[: cfg.text_vocab_size] = True
        markers = (
            cfg.user_start_id,
            cfg.assistant_start_id,
            cfg.media_begin_id,
            cfg.media_end_id,
            cfg.msg_end_id,
            cfg.speech_ct_id,
            cfg.speech_ctd_id,
        )
        legal[list(markers)] = False
        legal[[cfg.text_blank_id, cfg.text_eos_id]] = True
    elif stream == "audio":
        legal[cfg.audio_offset : cfg.audio_offset + cfg.audio_vocab_size] = True
        legal[list(cfg.audio_stop_ids)] = True
    else:
        raise ValueError(f"stream must be 'audio' or 'text', got {stream!r}")
    return legal


def policy_logprobs(
    logits: torch.Tensor, temperature: float, legal: torch.Tensor | None
) -> torch.Tensor:
    """``log_softmax(restrict(logits) / T)`` in float32 (T = 1 when greedy); any leading shape."""
    logits = logits.float()
    if legal is not None:
        logits = logits.masked_fill(~legal, float("-inf"))
    if temperature > GREEDY_TEMPERATURE:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1)


def _sample(
    logits: torch.Tensor,
    history: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    penalty: float,
    legal: torch.Tensor | None,
    generator: torch.Generator | Sequence[torch.Generator] | None,
) -> torch.Tensor:
    """One token per row from (B, V) logits; ``history`` (B, w) recent ids of the stream.

    ``generator``: one for the batch, or one per row (each row's draw then depends on its own
    generator only, not on which rows share the batch).
    """
    logits = logits.float()
    if legal is not None:
        logits = logits.masked_fill(~legal, float("-inf"))
    if penalty != 1.0 and history.numel():
        seen = logits.gather(1, history)
        logits = logits.scatter(1, history, torch.where(seen > 0, seen / penalty, seen * penalty))
    if temperature <= GREEDY_TEMPERATURE:
        return logits.argmax(-1)
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keeps the first token always
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    if isinstance(generator, Sequence):
        rows = [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generator, strict=True)]
        return torch.cat(rows)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


# ---- generation -------------------------------------------------------------------------


@torch.no_grad()
def all_ranks_done(done: torch.Tensor) -> torch.Tensor:
    """Every rank's "all rows finished" (MIN over ranks; this rank's alone without a group).

    :func:`generate`'s ``all_done`` for sharded models: each forward gathers weights
    collectively, so a finished rank keeps stepping until every rank is done.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = done.to(torch.int32).clone()
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return flag.bool()
    return done


def generate(
    model: DualStreamLM,
    prompt_audio_ids: torch.Tensor,
    prompt_text_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cfg: SamplingConfig,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    whisper_features: torch.Tensor | None = None,
    feature_mask: torch.Tensor | None = None,
    all_done: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Rollout:
    """Sample responses for left-padded prompts (B, P); see the module docstring.

    ``whisper_features`` / ``feature_mask`` (B, P, ·) apply to the prompt only. The model's
    train/eval mode is left as it is (its dropout is 0 by default). ``all_done`` maps this
    rank's "every row finished" (0-d bool tensor) to the global answer: under FSDP every rank
    must keep stepping until all are done (each step gathers weights collectively), so pass a
    function that all-reduces it with MIN across ranks.
    """
    mcfg: DualStreamConfig = model.config
    if not bool(attention_mask[:, -1].all()):
        raise ValueError(
            "generate: prompts must be LEFT-padded (attention_mask[:, -1] all 1); "
            "use layout.collate(..., left_pad=True)"
        )
    batch, device = prompt_audio_ids.shape[0], prompt_audio_ids.device
    sampler = _StreamSampler(mcfg, cfg, device, generator)
    stop_ids = torch.tensor(mcfg.audio_stop_ids, device=device)
    seqs = {"audio": prompt_audio_ids, "text": prompt_text_ids}
    mask = attention_mask.long()
    text_done = torch.zeros(batch, dtype=torch.bool, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.full((batch,), cfg.max_new_tokens, dtype=torch.long, device=device)
    cache, fresh, feats = (
        None,
        (prompt_audio_ids, prompt_text_ids),
        (whisper_features, feature_mask),
    )
    for step in range(cfg.max_new_tokens):
        if cfg.use_cache:
            out = model(
                *fresh,
                attention_mask=mask,
                past_key_values=cache,
                use_cache=True,
                whisper_features=feats[0],
                feature_mask=feats[1],
                logits_to_keep=1,
            )
            cache, feats = out.past_key_values, (None, None)
        else:
            feats_all = _padded_features(whisper_features, feature_mask, mask.shape[1])
            out = model(
                seqs["audio"], seqs["text"], attention_mask=mask, logits_to_keep=1, **feats_all
            )
        real = {
            "text": ~(text_done | finished),
            "audio": ~finished & (step >= mcfg.audio_delay),
        }
        tok = {
            "audio": sampler.step("audio", out.audio_logits[:, -1], real["audio"]),
            "text": sampler.step("text", out.text_logits[:, -1], real["text"]),
        }
        # the position just written is real for rows unfinished before this step
        mask = torch.cat([mask, (~finished).long()[:, None]], 1)
        text_done |= real["text"] & (tok["text"] == mcfg.text_eos_id)
        ended = real["audio"] & torch.isin(tok["audio"], stop_ids)
        lengths = torch.where(ended, step + 1, lengths)
        finished |= ended
        seqs = {s: torch.cat([seqs[s], tok[s][:, None]], 1) for s in seqs}
        fresh = (tok["audio"][:, None], tok["text"][:, None])
        done = finished.all()
        if bool(all_done(done) if all_done is not None else done):
            break
    res = sampler.result()
    return Rollout(
        **res,
        finished=finished,
        truncated=~finished,
        lengths=lengths.clamp(max=res["audio_ids"].shape[1]),
        full_audio_ids=seqs["audio"],
        full_text_ids=seqs["text"],
        full_attention_mask=mask,
        response_start=prompt_audio_ids.shape[1],
    )


class _StreamSampler:
    """Per-stream sampling state of one :func:`generate` call: history, log-probs, masks."""

    def __init__(self, mcfg: DualStreamConfig, cfg: SamplingConfig, device, generator):
        self.mcfg, self.cfg, self.generator = mcfg, cfg, generator
        self.legal = {
            s: legal_ids_mask(mcfg, s, device) if cfg.restrict_vocab else None
            for s in ("audio", "text")
        }
        self.ids = {"audio": [], "text": []}
        self.logprobs = {"audio": [], "text": []}
        self.masks = {"audio": [], "text": []}

    def step(self, stream: str, logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Sample (B,) ids from (B, V) logits; rows with ``real`` False are forced to blank."""
        cfg, window = self.cfg, max(int(getattr(self.cfg, f"{stream}_repetition_window")), 1)
        past = self.ids[stream][-window:]
        history = (
            torch.stack(past, 1)
            if past
            else logits.new_zeros((logits.shape[0], 0), dtype=torch.long)
        )
        temperature = getattr(cfg, f"{stream}_temperature")
        sampled = _sample(
            logits,
            history,
            temperature,
            getattr(cfg, f"{stream}_top_k"),
            getattr(cfg, f"{stream}_top_p"),
            getattr(cfg, f"{stream}_repetition_penalty"),
            self.legal[stream],
            self.generator,
        )
        logp = policy_logprobs(logits, temperature, self.legal[stream])
        logp = logp.gather(1, sampled[:, None])[:, 0]
        token = torch.where(real, sampled, self.mcfg.text_blank_id)
        self.ids[stream].append(token)
        self.logprobs[stream].append(torch.where(real, logp, 0.0))
        self.masks[stream].append(real)
        return token

    def result(self) -> dict[str, torch.Tensor]:
        """(B, T) ids, log-probs and masks of both streams, named as in :class:`Rollout`."""
        out = {}
        for s in ("audio", "text"):
            out[f"{s}_ids"] = torch.stack(self.ids[s], 1)
            out[f"{s}_logprobs"] = torch.stack(self.logprobs[s], 1)
            out[f"{s}_mask"] = torch.stack(self.masks[s], 1)
        return out


def _padded_features(features, feature_mask, length: int) -> dict:
    """Prompt features extended with zeros / False to ``length`` positions (cache-free path)."""
    if features is None:
        return {}
    extra = length - features.shape[1]
    features = torch.nn.functional.pad(features, (0, 0, 0, extra))
    feature_mask = torch.nn.functional.pad(feature_mask.bool(), (0, extra), value=False)
    return {"whisper_features": features, "feature_mask": feature_mask}


# ---- recomputation ----------------------------------------------------------------------


def sequence_logprobs(
    model: DualStreamLM,
    full_audio_ids: torch.Tensor,
    full_text_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: int,
    temperatures: tuple[float, float] = (1.0, 1.0),
    *,
    restrict_vocab: bool = True,
    masks: tuple[torch.Tensor, torch.Tensor] | None = None,
    whisper_features: torch.Tensor | None = None,
    feature_mask: torch.Tensor | None = None,
    return_logits: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Per-token log-probs (B, L - response_start) of the response ids, one forward pass.

    Same definition as :func:`generate`'s (module docstring). ``temperatures`` =
    ``(audio, text)`` of sampling; ``masks`` = ``(audio_mask, text_mask)`` zero the forced
    positions. Runs with gradients unless the caller disables them. Returns
    ``(audio_logprobs, text_logprobs)``; with ``return_logits`` also the heads' raw logits
    over the response positions, ``(…, audio_logits, text_logits)`` (B, T, V), e.g. for
    entropy logging without a second forward pass.
    """
    mcfg: DualStreamConfig = model.config
    n_resp = full_audio_ids.shape[1] - response_start
    if n_resp < 1 or response_start < 1:
        raise ValueError(
            f"response_start={response_start} leaves no response in "
            f"{full_audio_ids.shape[1]} positions"
        )
    feats = _padded_features(whisper_features, feature_mask, full_audio_ids.shape[1] - 1)
    out = model(
        full_audio_ids[:, :-1],
        full_text_ids[:, :-1],
        attention_mask=attention_mask[:, :-1],
        logits_to_keep=n_resp,
        **feats,
    )
    result = []
    for stream, logits, ids, temp in (
        ("audio", out.audio_logits, full_audio_ids, temperatures[0]),
        ("text", out.text_logits, full_text_ids, temperatures[1]),
    ):
        legal = legal_ids_mask(mcfg, stream, logits.device) if restrict_vocab else None
        target = ids[:, response_start:]
        # forced blanks may be illegal for the head (-inf): gather, then zero them via masks
        lp = policy_logprobs(logits, temp, legal).gather(-1, target[..., None])[..., 0]
        result.append(lp)
    if masks is not None:
        result = [
            torch.where(m, lp, torch.zeros_like(lp)) for m, lp in zip(masks, result, strict=True)
        ]
    if return_logits:
        return result[0], result[1], out.audio_logits, out.text_logits
    return result[0], result[1]


def rollout_logprobs(
    model: DualStreamLM, rollout: Rollout, cfg: SamplingConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sequence_logprobs` on a rollout's own sequences, masks and temperatures."""
    return sequence_logprobs(
        model,
        rollout.full_audio_ids,
        rollout.full_text_ids,
        rollout.full_attention_mask,
        rollout.response_start,
        cfg.temperatures,
        restrict_vocab=cfg.restrict_vocab,
        masks=(rollout.audio_mask, rollout.text_mask),
    )


# ---- decoding helpers -------------------------------------------------------------------


def response_codes(rollout: Rollout, cfg: DualStreamConfig) -> list[torch.Tensor]:
    """Codec codes of each row's response (sampled code ids; end tokens and blanks dropped)."""
    rows = []
    for ids, keep in zip(rollout.audio_ids, rollout.audio_mask, strict=True):
        rows.append(cfg.ids_to_codes(ids[keep]).cpu())
    return rows


def response_text_ids(rollout: Rollout, cfg: DualStreamConfig) -> list[list[int]]:
    """Text-token ids of each row's response, up to ``text_eos`` (blanks dropped)."""
    rows = []
    for ids, keep in zip(rollout.text_ids, rollout.text_mask, strict=True):
        real = ids[keep].tolist()
        real = real[: real.index(cfg.text_eos_id)] if cfg.text_eos_id in real else real
        rows.append([i for i in real if i != cfg.text_blank_id])
    return rows
