"""Reference systems that need no trained model, so a bench table has rows on day one.

Paper §5.6, Table 3:

* ``baseline`` — the *pipeline baseline* (paper: Whisper → ChatGPT → gpt-4o-mini-tts):
  transcribe the query with the ASR, reply from the transcript alone, speak the reply in
  the **neutral** assistant voice. It never sees the speaking style.
* ``topline`` — replies from the ground-truth content **and** style label, spoken in the
  tone the reply calls for.

What writes the reply text is a :class:`Responder`, ``respond(transcript, style_label) ->
(text, tone)``:

* :class:`SeedResponder` (offline): the seed item whose content best matches the
  transcript (Jaccard overlap of word sets). With a style label of that item it returns
  the item's reference reply for that style and its tone. Without one — the baseline: a
  text-only model cannot know the style — it returns the reply of the item's **first
  listed style** and ``neutral``, so both styles of a pair get the same answer, as the
  paper observes of style-blind systems. No word in common: a "please say it again" reply.
* :class:`OpenAIResponder`: a chat completion (any OpenAI-compatible ``base_url``) on the
  transcript, or on content + style label, asked to name the tone (one of
  :data:`paras2s_pl.data.labels.RESPONSE_TONES`).

The offline topline needs no responder: it speaks the test set's reference
``response_text`` in its ``response_tone`` (demo shards carry both; a ``query`` set
falls back to the seed reply for content + style).

Output of :func:`build_responses` (``paras2s bench respond``): ``<out>/<key>.flac`` per
query (16 kHz, the assistant speaker), ``<out>/responses.jsonl`` (key, system, heard
transcript, style label given, text, tone, error) and ``<out>/manifest.json``. A reply
the TTS cannot speak is recorded with its error and no audio (the evaluation then counts
that query as missing).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tqdm.auto import tqdm

from paras2s_pl.audio.io import encode_audio, resample
from paras2s_pl.data import labels
from paras2s_pl.data.schema import QueryMeta, Sample, schema_class
from paras2s_pl.data.seed import SeedItem, load_seed
from paras2s_pl.data.shards import ShardDataset, key_problem
from paras2s_pl.errors import UsageError
from paras2s_pl.llm import make_openai_client

log = logging.getLogger(__name__)

SYSTEMS = ("baseline", "topline")
RATE = 16000  # rate of the written responses
NOT_HEARD = "Sorry, I didn't quite catch that. Could you say it again?"


@runtime_checkable
class Responder(Protocol):
    """Writes a reply to what the user said, optionally knowing how it was said."""

    name: str

    def respond(self, transcript: str, style_label: str | None) -> tuple[str, str]:
        """``(reply text, tone)``; tone is a :data:`labels.RESPONSE_TONES` word."""
        ...


def words(text: str) -> set[str]:
    """Lower-case word set of ``text`` (apostrophes kept)."""
    return set(re.findall(r"[a-z0-9']+", text.lower()))


class SeedResponder:
    """Offline responder: the best-matching seed item's reference reply (module docstring).

    Args:
        seed_files: seed JSONL files (default: the shipped ones).
    """

    name = "seed"

    def __init__(self, seed_files: list[str] | None = None) -> None:
        self.items: list[SeedItem] = load_seed(seed_files)
        self._words = [words(it.content) for it in self.items]

    def match(self, transcript: str) -> SeedItem | None:
        """The seed item with the highest word-set Jaccard overlap; None if no overlap."""
        heard = words(transcript)
        best, best_score = None, 0.0
        for item, content in zip(self.items, self._words, strict=True):
            score = len(heard & content) / len(heard | content) if heard else 0.0
            if score > best_score:
                best, best_score = item, score
        return best

    def respond(self, transcript: str, style_label: str | None) -> tuple[str, str]:
        """The matched item's reply for ``style_label``; style-blind without one."""
        item = self.match(transcript)
        if item is None:
            return NOT_HEARD, "neutral"
        if style_label in item.responses:
            reply = item.responses[style_label]
            return reply.text, reply.tone
        return item.responses[item.styles[0]].text, "neutral"


TONE_RE = re.compile(r"^\W*tone\W*:[\s*_]*([a-z]+)", re.IGNORECASE | re.MULTILINE)
REPLY_RE = re.compile(r"^\W*reply\W*:[\s*_]*(.+)", re.IGNORECASE | re.MULTILINE | re.DOTALL)


def parse_reply(answer: str) -> tuple[str, str | None]:
    """``(reply, tone)`` from "Tone: …" and "Reply: …" lines; the whole answer if unformatted."""
    reply = REPLY_RE.search(answer)
    tone = TONE_RE.search(answer)
    text = (reply.group(1) if reply else answer).strip().strip('"')
    return text, tone.group(1).lower() if tone else None


class OpenAIResponder:
    """A chat model writes the reply (and, given the style, the tone to speak it in).

    Args:
        model: model id at the endpoint.
        base_url: OpenAI-compatible endpoint; None: OpenAI.
        api_key_env: environment variable holding the key (a local server may need none).
        temperature: sampling temperature.
        timeout: seconds per request.
        max_retries: the ``openai`` client's retries (with backoff) on 429/5xx/timeouts.
    """

    SYSTEM = (
        "You are a friendly, helpful voice assistant with high EQ. You answer in one to "
        "three short sentences that sound natural when spoken."
    )

    def __init__(
        self,
        model: str = "gpt-4.1",
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.7,
        timeout: float = 60.0,
        max_retries: int = 5,
    ) -> None:
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.temperature, self.timeout, self.max_retries = temperature, timeout, max_retries
        self.name = f"openai:{model}"
        self._client = None

    def __repr__(self) -> str:
        return f"OpenAIResponder(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def client(self) -> Any:
        """The ``openai.OpenAI`` client, made on first use (the key is read then)."""
        if self._client is None:
            self._client = make_openai_client(
                self.base_url, self.api_key_env, self.timeout, self.max_retries
            )
        return self._client

    def prompt(self, transcript: str, style_label: str | None) -> str:
        """The user message: the transcript, and the style with the tone menu when known."""
        said = f'The user said: "{transcript}"\n'
        if style_label is None:
            return said + "Write your spoken reply. Answer in one line:\nReply: <your reply>"
        description = labels.STYLE_DESCRIPTIONS.get(style_label, style_label)
        return (
            said + f"The user's speaking style: {description}.\n"
            "Write the reply that best fits both what was said and how it was said, and "
            f"choose the tone to speak it in, one of: {', '.join(labels.RESPONSE_TONES)}.\n"
            "Answer in exactly two lines:\nTone: <tone>\nReply: <your reply>"
        )

    def respond(self, transcript: str, style_label: str | None) -> tuple[str, str]:
        """One chat completion; an unknown or missing tone is spoken ``neutral`` (logged)."""
        reply = self.client.chat.completions.create(
            model=self.model,
            temperature=self.temperature,
            messages=[
                {"role": "system", "content": self.SYSTEM},
                {"role": "user", "content": self.prompt(transcript, style_label)},
            ],
        )
        text, tone = parse_reply(reply.choices[0].message.content or "")
        if style_label is None:
            return text, "neutral"
        if tone not in labels.RESPONSE_TONES:
            log.warning(
                "responder %s: tone %r is not one of %s; speaking it neutral",
                self.name,
                tone,
                labels.RESPONSE_TONES,
            )
            return text, "neutral"
        return text, tone


# ------------------------------------------------------------------------------- systems
def _batches(ds: ShardDataset, size: int) -> Iterator[list[Sample]]:
    batch: list[Sample] = []
    for sample in ds:
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _replies(
    system: str, batch: Sequence[Sample], responder: Responder | None, asr: Any
) -> list[tuple[str, str | None, str, str]]:
    """``(heard, style_label, text, tone)`` per sample of ``batch``."""
    if system == "baseline":
        heard = asr.transcribe([s.user_audio for s in batch], RATE)
        return [(h, None, responder.respond(h, None)[0], "neutral") for h in heard]
    if responder is None and all(getattr(s.meta, "response_text", "") for s in batch):
        return [
            (s.meta.content, s.meta.style, s.meta.response_text, s.meta.response_tone)
            for s in batch
        ]
    responder = responder or SeedResponder()  # a query set without reference replies
    return [
        (s.meta.content, s.meta.style, *responder.respond(s.meta.content, s.meta.style))
        for s in batch
    ]


def _prepare_out(out: Path, overwrite: bool) -> None:
    if (out / "responses.jsonl").exists():
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds responses (responses.jsonl); pass "
                "--overwrite to replace them or choose another --out"
            )
        for path in [*out.glob("*.flac"), *out.glob("*.wav"), out / "responses.jsonl"]:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_response(out: Path, key: str, audio: bytes) -> Path:
    """Write ``<out>/<key>.flac`` atomically and return its path.

    The reader already skips keys that cannot name a file; this refuses them again
    (``ValueError``), so no key ever writes outside ``out``.
    """
    path = out / f"{key}.flac"
    problem = key_problem(key)
    if problem is None and path.resolve().parent != out.resolve():
        problem = f"resolves to {path.resolve()}"
    if problem is not None:
        raise ValueError(f"refused to write the response of key {key!r} outside {out}: {problem}")
    tmp = out / f".{key}.flac.tmp"
    tmp.write_bytes(audio)
    os.replace(tmp, path)
    return path


def build_responses(
    system: str,
    testset: str | Path,
    split: str,
    out: str | Path,
    responder: Responder | None = None,
    asr: Any = None,
    tts: Any = None,
    overwrite: bool = False,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``system``'s responses to every query of ``testset``/``split`` into ``out``.

    Args:
        system: ``baseline`` or ``topline``.
        testset: query/demo shard directory.
        split: its split.
        out: output directory (``<key>.flac``, ``responses.jsonl``, ``manifest.json``).
        responder: who writes replies; baseline default :class:`SeedResponder`, topline
            default the test set's reference replies.
        asr: the baseline's recogniser (default :class:`~paras2s_pl.audio.asr.PocketSphinxASR`).
        tts: speaks the replies (default :class:`~paras2s_pl.audio.tts.EspeakTTS`).
        overwrite: replace responses already in ``out``.
        batch_size: queries per ASR call.
        progress: show a progress bar.

    Returns:
        The manifest: counts, failures, provenance, seconds.
    """
    if system not in SYSTEMS:
        raise UsageError(
            f"--system {system!r} is no reference system; choose one of {list(SYSTEMS)}, or "
            "give a trained policy with --policy DIR"
        )
    if system == "baseline":
        responder = responder or SeedResponder()
        if asr is None:
            from paras2s_pl.audio.asr import PocketSphinxASR

            asr = PocketSphinxASR()
    if tts is None:
        from paras2s_pl.audio.tts import EspeakTTS

        tts = EspeakTTS(RATE)
    out = Path(out)
    ds = ShardDataset(testset, split=split, sample_rate=RATE)  # a bad --testset fails here,
    # before --out is touched; every sample is parsed as ds.schema, so this one check holds
    if not issubclass(schema_class(ds.schema), QueryMeta):
        raise UsageError(
            f"{testset}/{split}: samples carry no category/style labels (schema 'prompt'); "
            "reference systems need a query or demo set (e.g. --split test)"
        )
    _prepare_out(out, overwrite)
    start, written, failed = time.time(), 0, 0
    bar = tqdm(total=ds.length, desc=f"respond {system}", unit="query", disable=not progress)
    with (out / "responses.jsonl").open("w", encoding="utf-8") as log_file:
        for batch in _batches(ds, batch_size):
            for sample, (heard, style, text, tone) in zip(
                batch, _replies(system, batch, responder, asr), strict=True
            ):
                record = {
                    "key": sample.key,
                    "system": system,
                    "heard": heard,
                    "style_label": style,
                    "text": text,
                    "tone": tone,
                    "error": None,
                }
                try:
                    wav, sr = tts.synthesize(text, tone, labels.ASSISTANT_SPEAKER)
                    write_response(out, sample.key, encode_audio(resample(wav, sr, RATE), RATE))
                    written += 1
                except ValueError as err:  # unspeakable text or unsafe key: recorded, no audio
                    record["error"], failed = str(err), failed + 1
                log_file.write(json.dumps(record, ensure_ascii=False) + "\n")
                bar.update()
    bar.close()
    manifest = {
        "system": system,
        "testset": str(testset),
        "split": split,
        "written": written,
        "failed": failed,
        "responder": getattr(responder, "name", "reference"),
        "asr": type(asr).__name__ if asr is not None else None,
        "tts": type(tts).__name__,
        "speaker": labels.ASSISTANT_SPEAKER,
        "sample_rate": RATE,
        "seconds": round(time.time() - start, 2),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if failed:
        log.warning(
            "respond %s: %d replies could not be spoken (see %s)",
            system,
            failed,
            out / "responses.jsonl",
        )
    return manifest
