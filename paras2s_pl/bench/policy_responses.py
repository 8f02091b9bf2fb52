"""A trained speech policy as a bench system: ``paras2s bench respond --system policy``.

The policy (an SFT or GRPO export, or an untrained ``save_pretrained`` model for the "base"
row of Table 3) hears each test query's audio and answers with both streams; the codec turns
the audio stream (+ its text) into the response waveform. Output as the reference systems
write it (:mod:`paras2s_pl.bench.systems`): ``<out>/<key>.flac`` (16 kHz),
``<out>/responses.jsonl`` (key, system, text, codes, finished, error) and
``<out>/manifest.json``. A response with no audio codes or an undecodable one is recorded
with its error and no audio (the evaluation counts the query as missing). Decoding is
greedy by default (``sampling`` overrides), so a row is reproducible.

**What the policy hears.** The query audio and, when the policy was trained with it (its
export's ``query_transcript``, :mod:`paras2s_pl.models.speech_policy`;
``policy_query_transcript`` overrides it with a one-line warning), the query transcript
``t_i``. A system under test is given speech only, so ``t_i`` is by default the ASR
transcript of the query audio (``query_transcript="asr"``; the paper transcribes unlabeled
speech with Whisper-v3, §4.3), made by the same recogniser as the baseline's; ``shard``
gives the test set's ``content`` instead (exact, as a near-perfect ASR would be, and as the
mini GRPO config trains with). What it heard is ``heard`` in ``responses.jsonl`` (null when
it hears no transcript); the manifest records the setting, its source and the recogniser.
The ASR transcripts are cached by audio hash in
``$PARAS2S_CACHE/query_transcripts/<recogniser id>.jsonl`` (default ``~/.cache/paras2s``), so
the systems of one test set (base, SFT, GRPO) and reruns transcribe each query once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from paras2s_pl.audio.io import encode_audio, resample
from paras2s_pl.bench.evaluate import audio_sha1, part_id
from paras2s_pl.bench.systems import RATE, _prepare_out, write_response
from paras2s_pl.data.shards import ShardDataset
from paras2s_pl.errors import UsageError
from paras2s_pl.models.speech_policy import Policy, load_policy

log = logging.getLogger(__name__)

#: Bench decoding: greedy on both streams.
BENCH_SAMPLING = {"audio_temperature": 0.0, "text_temperature": 0.0, "max_new_tokens": 256}


def build_policy_responses(
    policy: str | Path | Policy,
    testset: str | Path,
    split: str,
    out: str | Path,
    system: str = "policy",
    sampling: dict[str, Any] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    query_transcript: Literal["asr", "shard"] = "asr",
    asr: Any = None,
    policy_query_transcript: bool | None = None,
) -> dict[str, Any]:
    """Write ``policy``'s responses to every query of ``testset``/``split`` into ``out``.

    Args:
        policy: An exported policy directory (or a loaded :class:`Policy`).
        testset: Query/demo shard directory.
        split: Its split.
        out: Output directory.
        system: Name recorded in ``responses.jsonl`` and the manifest.
        sampling: :class:`~paras2s_pl.models.sampling.SamplingConfig` overrides over
            :data:`BENCH_SAMPLING`.
        seed: Sampling seed (used only when a temperature is > 0).
        overwrite: Replace responses already in ``out``.
        progress: Show a progress bar.
        query_transcript: Where ``t_i`` comes from for a policy that hears it: ``asr``
            (``asr`` on the query audio) or ``shard`` (the test set's ``content``).
        asr: The recogniser for ``asr`` (default
            :class:`~paras2s_pl.audio.asr.PocketSphinxASR`); unused when the policy hears
            no transcript.
        policy_query_transcript: Override of the export's ``query_transcript`` (warns when
            it contradicts it); for a loaded :class:`Policy`, its own setting is used.

    Returns:
        The manifest: counts, failures, provenance, seconds.
    """
    if query_transcript not in ("asr", "shard"):
        raise UsageError(f"--query_transcript {query_transcript!r}; expected 'asr' or 'shard'")
    if not isinstance(policy, Policy):
        policy = load_policy(
            policy,
            sampling={**BENCH_SAMPLING, **(sampling or {})},
            query_transcript=policy_query_transcript,
        )
    if not policy.query_transcript or query_transcript == "shard":
        asr = None  # nothing to recognise
    elif asr is None:
        from paras2s_pl.audio.asr import PocketSphinxASR

        asr = PocketSphinxASR()
    recognised = QueryTranscripts(asr) if asr is not None else None
    out = Path(out)
    ds = ShardDataset(testset, split=split, sample_rate=RATE)  # a bad --testset fails first
    _prepare_out(out, overwrite)
    start, written, failed = time.time(), 0, 0
    bar = tqdm(total=ds.length, desc=f"respond {system}", unit="query", disable=not progress)
    with (out / "responses.jsonl").open("w", encoding="utf-8") as log_file:
        for sample in ds:
            heard = None
            if policy.query_transcript:
                heard = (
                    recognised(sample.user_audio, sample.sample_rate)
                    if recognised is not None
                    else sample.meta.content
                )
            [(codes, text)] = policy.respond(
                sample.user_audio, sample.sample_rate, 1, seed, heard or ""
            )
            record = {"key": sample.key, "system": system, "heard": heard, "text": text,
                      "codes": int(codes.numel()), "error": None}  # fmt: skip
            try:
                if codes.numel() == 0:
                    raise ValueError("the policy produced no audio codes")
                wav, sr = policy.codec.decode(codes, text or None)
                wav = resample(np.asarray(wav, dtype=np.float32).reshape(-1), sr, RATE)
                write_response(out, sample.key, encode_audio(wav, RATE))
                written += 1
            except Exception as err:  # one bad response must not stop the bench
                record["error"], failed = repr(err), failed + 1
            log_file.write(json.dumps(record, ensure_ascii=False) + "\n")
            bar.update()
    bar.close()
    manifest = {
        "system": system,
        "policy": policy.path,
        "testset": str(testset),
        "split": split,
        "written": written,
        "failed": failed,
        "sampling": {k: v for k, v in vars(policy.sampling).items()},
        "codec": type(policy.codec).__name__,
        "query_transcript": policy.query_transcript,
        "query_transcript_source": query_transcript if policy.query_transcript else None,
        "asr": type(asr).__name__ if asr is not None else None,
        "sample_rate": RATE,
        "seconds": round(time.time() - start, 2),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if failed:
        log.warning("respond %s: %d responses have no audio (see %s)", system, failed,
                    out / "responses.jsonl")  # fmt: skip
    return manifest


class QueryTranscripts:
    """``asr``'s transcripts of query audio, cached by audio hash (module docstring)."""

    def __init__(self, asr: Any) -> None:
        root = Path(os.environ.get("PARAS2S_CACHE", "~/.cache/paras2s")).expanduser()
        self.asr, self.path = asr, root / "query_transcripts" / f"{part_id(asr)}.jsonl"
        self.known: dict[str, str] = {}
        if self.path.exists():
            for line in self.path.read_text("utf-8", errors="replace").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash or a concurrent writer
                    continue
                self.known[row["audio_sha1"]] = row["transcript"]

    def __call__(self, wav: np.ndarray, sample_rate: int) -> str:
        """The transcript of ``wav`` (recognised once per recogniser and audio)."""
        sha = audio_sha1(wav)
        if sha not in self.known:
            self.known[sha] = self.asr.transcribe([wav], sample_rate)[0]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            row = {"audio_sha1": sha, "transcript": self.known[sha]}
            # one write per line, so systems answering at the same time interleave whole lines
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        return self.known[sha]
