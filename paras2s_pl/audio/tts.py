"""Offline text-to-speech with style presets: eSpeak NG through ctypes, and an OpenAI slot.

ParaS2S queries must differ in HOW they are said, so every label of
:data:`paras2s_pl.data.labels.TTS_STYLES` maps to a :class:`Prosody` preset that moves
mean F0, F0 range, speaking rate and loudness in the direction the label is known for.
Pitch and range are eSpeak's 0-100 scales where 50 is the speaker's own voice; each
speaker adds a small stable pitch offset, so presets act relative to the speaker.

=========== ===== ===== ==== ==== === ===== ====== ==========================================
style       pitch range rate vol  gap shift trem   why it sounds like the label
=========== ===== ===== ==== ==== === ===== ====== ==========================================
neutral      50    50   170  100  0   1.0   0      the speaker's plain read-out voice
happy        68    85   195  125  0   1.0   0      high, lively wide melody, quick, bright
surprised    80   100   185  135  0   1.0   0      highest pitch, widest swings, loud
sad          32    15   125   55  1   1.0   0      low, flat, slow and quiet
angry        56    70   220  190  0   1.0   0      loud (eSpeak compresses: tense), fast
fear         70    30   190   85  0   1.0   .05    high, fast-ish, narrow, 7 Hz trembling
disgust      30    40   130   90  1   1.0   0      low, slow, heavy
sincere      48    55   155  100  0   1.0   0      warm, moderate, even
sarcastic    42    98   115  105  3   1.0   0      slow, drawn-out gaps, exaggerated melody
adult        45    45   170  100  0   1.0   0      settled adult register
child        70    80   165  105  0   1.3   0      raised pitch + formant/pitch shift 1.3x
male         44    50   170  100  0   1.0   0      slightly low (gender = speaker variant)
female       56    55   170  100  0   1.0   0      slightly high (gender = speaker variant)
cheerful     65    75   185  115  0   1.0   0      bright and upbeat, lighter than happy
excited      76    95   205  135  0   1.0   0      high, wide and fast
calm         42    30   145   80  0   1.0   0      low-ish, steady, unhurried, soft
empathetic   40    32   135   70  0   1.0   0      soft, slow, low: comforting
gentle       54    45   140   75  0   1.0   0      warm, clear and slower (talking to a child)
apologetic   40    35   145   70  0   1.0   0      soft, slightly low and subdued
serious      38    22   160  110  0   1.0   0      low, flat, firm
=========== ===== ===== ==== ==== === ===== ====== ==========================================

``vol`` also sets the output peak (``0.5 * vol / 100``), so loudness survives
normalisation. ``shift`` speeds the waveform up after synthesis (pitch and formants
rise together; eSpeak has no child voice). A child's voice is not gendered, so male
speakers get 1.25x more shift and +30 pitch: adult male formants sit ~20 % and F0 ~50 %
below female ones, and a male-voiced child must still sound above any adult woman.
``gap`` is eSpeak's word gap in 10 ms units; ``trem`` is a vibrato depth (fraction of F0).

Run: ``python -m paras2s_pl.audio.tts "Are you serious?" --style sarcastic --speaker m1
--out x.wav``. In code: ``wav, sr = EspeakTTS().synthesize("Hi.", style="happy")``.
"""

from __future__ import annotations

import _ctypes  # dlclose: CPython exposes no public unload
import argparse
import ctypes as C
import os
import threading
import zlib
from ctypes.util import find_library
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np

from paras2s_pl.audio.io import resample
from paras2s_pl.data import labels

NATIVE_SR = 22050  # eSpeak NG's fixed output rate
Audio = tuple[np.ndarray, int]  # (mono float32 wav, sample rate)


@runtime_checkable
class TTS(Protocol):
    """A speech synthesiser that speaks ``text`` in a style label of ``labels.TTS_STYLES``."""

    sample_rate: int

    def synthesize(self, text: str, style: str = "neutral", speaker: str | None = None) -> Audio:
        """Return mono float32 audio in [-1, 1] and its sample rate."""
        ...


@dataclass(frozen=True)
class Prosody:
    """eSpeak parameters for one style (see the module table for each preset's reasons).

    Attributes:
        pitch: Base pitch 0-100 (50 = the speaker's natural pitch).
        range: Pitch range 0-100 (0 = monotone, 50 = normal).
        rate: Words per minute (eSpeak accepts 80-450).
        volume: Loudness 0-200; also sets the output peak level.
        wordgap: Extra pause between words, in 10 ms units.
        shift: Post-synthesis pitch+formant shift factor (child voice); 1.0 = none.
        tremble: Vibrato depth as a fraction of F0 at 7 Hz (fear); 0.0 = none.
    """

    pitch: int = 50
    range: int = 50
    rate: int = 170
    volume: int = 100
    wordgap: int = 0
    shift: float = 1.0
    tremble: float = 0.0

    @property
    def level(self) -> float:
        """Output peak amplitude: proportional to volume so loud styles stay loud."""
        return float(np.clip(0.5 * self.volume / 100, 0.05, 0.98))


P = Prosody
STYLE_PRESETS: dict[str, Prosody] = {
    "neutral": P(),
    "happy": P(68, 85, 195, 125),
    "surprised": P(80, 100, 185, 135),
    "sad": P(32, 15, 125, 55, wordgap=1),
    "angry": P(56, 70, 220, 190),
    "fear": P(70, 30, 190, 85, tremble=0.05),
    "disgust": P(30, 40, 130, 90, wordgap=1),
    "sincere": P(48, 55, 155, 100),
    "sarcastic": P(42, 98, 115, 105, wordgap=3),
    "adult": P(45, 45, 170, 100),
    "child": P(70, 80, 165, 105, shift=1.3),
    "male": P(44, 50, 170, 100),
    "female": P(56, 55, 170, 100),
    "cheerful": P(65, 75, 185, 115),
    "excited": P(76, 95, 205, 135),
    "calm": P(42, 30, 145, 80),
    "empathetic": P(40, 32, 135, 70),
    "gentle": P(54, 45, 140, 75),
    "apologetic": P(40, 35, 145, 70),
    "serious": P(38, 22, 160, 110),
}
del P
MALE_CHILD_BOOST = (1.25, 30)  # (shift factor, pitch points) for male child voices
DEFAULT_SPEAKER = {g: labels.SPEAKERS["train"][g][0] for g in ("male", "female")}


def speaker_pitch_offset(speaker: str) -> int:
    """Stable per-speaker pitch offset in [-5, 5] (crc32, not ``hash``: same every run)."""
    return zlib.crc32(speaker.encode()) % 11 - 5


def check_text(text: str) -> str:
    """Return ``text`` stripped; raise ``ValueError`` when there is nothing to speak."""
    if not any(ch.isalnum() for ch in text):
        raise ValueError(f"cannot speak text {text!r}: it has no letters or digits; pass words")
    return text.strip()


def resolve(style: str, speaker: str | None) -> tuple[Prosody, str]:
    """Validate ``style``/``speaker`` and return the preset and the speaker to use."""
    if style not in STYLE_PRESETS:
        raise ValueError(f"unknown style {style!r}; expected one of {list(labels.TTS_STYLES)}")
    if speaker is None:
        speaker = DEFAULT_SPEAKER.get(style, labels.ASSISTANT_SPEAKER)
    elif speaker not in (known := labels.all_speakers()):
        raise ValueError(f"unknown speaker {speaker!r}; expected one of {list(known)}")
    gender = labels.speaker_gender(speaker)
    if style in DEFAULT_SPEAKER and gender != style:
        fits = [s for s in labels.all_speakers() if labels.speaker_gender(s) == style]
        raise ValueError(
            f"style {style!r} needs a {style} speaker but speaker {speaker!r} is {gender}; "
            f"pass speaker=None or one of {fits}"
        )
    return STYLE_PRESETS[style], speaker


# --------------------------------------------------------------------------- eSpeak NG
# speak_lib.h (API revision 12): enum values and flags used below.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7
# int callback(short *wav, int numsamples, espeak_EVENT *events); wav NULL = end.
_CALLBACK = C.CFUNCTYPE(C.c_int, C.POINTER(C.c_short), C.c_int, C.c_void_p)
_SIGNATURES = {  # name: (argtypes, restype); espeak_ERROR is an int enum, 0 = EE_OK
    "espeak_Initialize": ([C.c_int, C.c_int, C.c_char_p, C.c_int], C.c_int),  # -> sample rate
    "espeak_SetSynthCallback": ([_CALLBACK], None),
    "espeak_SetVoiceByName": ([C.c_char_p], C.c_int),
    "espeak_SetParameter": ([C.c_int, C.c_int, C.c_int], C.c_int),  # (param, value, relative)
    # (text, size, position, position_type, end_position, flags, unique_id*, user_data)
    "espeak_Synth": (
        [C.c_void_p, C.c_size_t, C.c_uint, C.c_int, C.c_uint, C.c_uint, C.c_void_p, C.c_void_p],
        C.c_int,
    ),
    "espeak_Terminate": ([], C.c_int),
}


def _locate_espeak() -> tuple[str, str | None]:
    """Return (library path, data path or None for the library's default data)."""
    try:
        import espeakng_loader

        return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except (ImportError, RuntimeError):  # RuntimeError: package present but data missing
        pass
    system = find_library("espeak-ng")  # e.g. libespeak-ng.so.1
    if system:
        return system, None
    raise ImportError(
        "libespeak-ng not found: `pip install espeakng-loader` (bundles the library and its "
        "data) or install the system library (`apt install libespeak-ng1`)"
    )


class _Espeak:
    """One process's handle on libespeak-ng; use only under :data:`_LOCK`.

    eSpeak keeps synthesis state in C statics (pitch flutter index, AGC gain, wave phase,
    libc ``rand`` breath noise), so output depends on what was spoken before. The only way
    to reset them is to unload and reload the library, so every call starts from a fresh
    ``dlopen`` + ``espeak_Initialize`` (~6 ms): determinism is worth more than that.
    """

    def __init__(self) -> None:
        self.lib_path, self.data_path = _locate_espeak()
        self.lib: C.CDLL | None = None
        self.chunks: list[np.ndarray] = []
        self.callback = _CALLBACK(self._collect)  # kept alive: C holds a raw pointer
        libc_name = find_library("c")
        self.libc = C.CDLL(libc_name) if libc_name else None

    def _collect(self, wav, n: int, _events) -> int:  # noqa: ANN001 - ctypes pointer types
        if wav and n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue synthesis

    def _reload(self) -> C.CDLL:
        if self.lib is not None:
            self.lib.espeak_Terminate()  # frees phoneme data; dlclose alone would leak it
            _ctypes.dlclose(self.lib._handle)  # refcount 0: statics are gone
            self.lib = None
        lib = C.CDLL(self.lib_path)
        for name, (argtypes, restype) in _SIGNATURES.items():
            getattr(lib, name).argtypes, getattr(lib, name).restype = argtypes, restype
        data = self.data_path.encode() if self.data_path else None
        if lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0) != NATIVE_SR:
            raise RuntimeError(
                f"espeak_Initialize failed for {self.lib_path} (data {self.data_path})"
            )
        lib.espeak_SetSynthCallback(self.callback)
        self.lib = lib
        return lib

    def synth(self, text: str, voice: str, params: dict[int, int]) -> np.ndarray:
        """Speak ``text`` with eSpeak voice ``voice``; return int16 samples at 22050 Hz."""
        lib = self._reload()
        if hasattr(lib, "espeak_ng_SetRandSeed"):  # espeak-ng >= 1.52's own PRNG
            lib.espeak_ng_SetRandSeed(C.c_long(0))
        if self.libc is not None:  # breath noise uses libc rand()
            self.libc.srand(0)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak has no voice {voice!r} (data {self.data_path})")
        for key, value in params.items():  # after the voice: a voice change resets some
            lib.espeak_SetParameter(key, value, 0)
        self.chunks = []
        raw = text.encode("utf-8")
        err = lib.espeak_Synth(raw, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth returned error {err} for text {text!r}")
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)


_LOCK = threading.Lock()
_ENGINE: _Espeak | None = None  # one per process; a forked child inherits a usable copy


if hasattr(os, "register_at_fork"):
    # A fork while another thread held the lock would leave the child's copy held forever;
    # the child's eSpeak state needs no such care since every call reloads the library.
    os.register_at_fork(after_in_child=lambda: globals().update(_LOCK=threading.Lock()))


def _engine() -> _Espeak:
    """The process's :class:`_Espeak`, created on first use (call under :data:`_LOCK`)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Espeak()
    return _ENGINE


def _tremble(x: np.ndarray, depth: float, sr: int, hz: float = 7.0) -> np.ndarray:
    """Vibrato via a sine-modulated delay line (pitch deviates by ``depth``) + 20 % tremolo."""
    n = np.arange(x.size, dtype=np.float64)
    phase = 2 * np.pi * hz * n / sr
    delay = depth * sr / (2 * np.pi * hz) * np.sin(phase)  # d'(t) * sr = depth * cos
    y = np.interp(n - delay, n, x)
    return y * (1.0 - 0.1 * (1 + np.sin(phase)))


class EspeakTTS:
    """Offline eSpeak NG synthesiser with :data:`STYLE_PRESETS` (thread- and fork-safe)."""

    def __init__(self, sample_rate: int = NATIVE_SR) -> None:
        """Args: sample_rate: output rate; audio is resampled with soxr when not 22050."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = int(sample_rate)
        with _LOCK:
            _engine()  # fail early (ImportError) when eSpeak is missing

    @staticmethod
    def prosody(style: str, speaker: str | None = None) -> tuple[Prosody, str]:
        """The preset for ``style`` moved by the speaker's pitch offset, and the speaker."""
        base, speaker = resolve(style, speaker)
        shift, pitch = base.shift, base.pitch + speaker_pitch_offset(speaker)
        if shift != 1.0 and labels.speaker_gender(speaker) == "male":
            shift, pitch = shift * MALE_CHILD_BOOST[0], pitch + MALE_CHILD_BOOST[1]
        pitch = int(np.clip(pitch, 0, 100))
        return replace(base, pitch=pitch, shift=shift), speaker

    def synthesize(self, text: str, style: str = "neutral", speaker: str | None = None) -> Audio:
        """Speak ``text`` in ``style`` by ``speaker`` (None: a default for the style).

        Returns:
            ``(wav, sample_rate)``: mono float32 in [-1, 1], peak = the style's level.

        Raises:
            ValueError: empty/letterless text, unknown style or speaker, a ``male``/
                ``female`` style with a speaker of the other gender, or no audio.
        """
        text = check_text(text)
        pro, speaker = self.prosody(style, speaker)
        return self.synthesize_prosody(text, pro, speaker)

    def synthesize_prosody(self, text: str, prosody: Prosody, speaker: str | None = None) -> Audio:
        """Speak ``text`` with explicit eSpeak parameters ``prosody`` (no preset, no offset).

        The prosody codec's decoder uses this: it measures pitch, range, loudness and tempo
        from tokens and needs the parameters applied exactly as given. ``speaker`` None is
        :data:`labels.ASSISTANT_SPEAKER`. Same output and errors as :meth:`synthesize`.
        """
        text = check_text(text)
        speaker = labels.ASSISTANT_SPEAKER if speaker is None else speaker
        if speaker not in (known := labels.all_speakers()):
            raise ValueError(f"unknown speaker {speaker!r}; expected one of {list(known)}")
        # Synthesise slower by the shift so the sped-up child voice keeps a normal tempo.
        rate = int(np.clip(round(prosody.rate / prosody.shift), 80, 450))
        params = {_RATE: rate, _VOLUME: prosody.volume, _PITCH: prosody.pitch,
                  _RANGE: prosody.range, _WORDGAP: prosody.wordgap}  # fmt: skip
        with _LOCK:
            raw = _engine().synth(text, f"en-us+{speaker}", params)
        if raw.size == 0 or not np.any(raw):
            raise ValueError(f"eSpeak produced no audio for text {text!r}; pass speakable words")
        wav = raw.astype(np.float64) / 32768.0
        if prosody.tremble > 0:
            wav = _tremble(wav, prosody.tremble, NATIVE_SR)
        # Reading 22050 Hz audio as if it were 22050*shift Hz raises pitch and formants
        # together; one resample does that and the conversion to the output rate.
        wav = resample(wav.astype(np.float32), round(NATIVE_SR * prosody.shift), self.sample_rate)
        return _trim_and_normalise(wav, self.sample_rate, prosody.level), self.sample_rate


def _trim_and_normalise(wav: np.ndarray, sr: int, level: float) -> np.ndarray:
    """Cut silence below 1 % of peak at both ends (keeping 30 ms) and scale peak to level."""
    peak = float(np.max(np.abs(wav)))
    loud = np.flatnonzero(np.abs(wav) > 0.01 * peak)
    pad = int(0.03 * sr)
    wav = wav[max(0, loud[0] - pad) : loud[-1] + pad + 1]
    return np.clip(wav * (level / peak), -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- OpenAI slot
STYLE_INSTRUCTIONS: dict[str, str] = {
    "neutral": "Speak in a plain, neutral, informative tone.",
    "happy": "Sound genuinely happy: bright, smiling voice, lively melody, slightly fast.",
    "surprised": "Sound surprised: high pitch, wide rising intonation, a little breathless.",
    "sad": "Sound sad: low, quiet, slow and flat, with a heavy, tired voice.",
    "angry": "Sound angry: loud, tense, clipped and fast, pressing on stressed words.",
    "fear": "Sound afraid: high, quick, tight voice that trembles slightly.",
    "disgust": "Sound disgusted: low, slow, drawn-out words with a sneer.",
    "sincere": "Sound sincere: warm, even, moderate pace, clearly meaning every word.",
    "sarcastic": "Sound sarcastic: slow, drawn-out, exaggerated up-and-down melody, mocking.",
    "adult": "Speak as an ordinary adult in a settled, neutral register.",
    "child": "Speak like a young child of about seven: high, light voice, simple phrasing.",
    "male": "Speak with a natural adult male voice in a neutral tone.",
    "female": "Speak with a natural adult female voice in a neutral tone.",
    "cheerful": "Speak cheerfully: upbeat, friendly and bright.",
    "excited": "Speak excitedly: high energy, fast, wide intonation.",
    "calm": "Speak calmly: steady, unhurried, soft and reassuring.",
    "empathetic": "Speak with empathy: soft, slow, low and comforting.",
    "gentle": "Speak gently, as to a child: warm, clear and a little slower.",
    "apologetic": "Speak apologetically: soft, slightly low, sincere and humble.",
    "serious": "Speak seriously: low, firm and measured, conveying caution.",
}


class OpenAITTS:
    """Slot for OpenAI ``gpt-4o-mini-tts`` (style via ``instructions``); not wired up yet."""

    sample_rate: int = 24000  # the API's PCM output rate

    def __init__(
        self,
        model: str = "gpt-4o-mini-tts",
        voice: str = "alloy",
        base_url: str | None = None,
        instructions: dict[str, str] | None = None,
    ) -> None:
        """Store the settings; ``instructions`` maps style -> spoken-style prompt."""
        self.model, self.voice, self.base_url = model, voice, base_url
        self.instructions = dict(STYLE_INSTRUCTIONS if instructions is None else instructions)

    def synthesize(self, text: str, style: str = "neutral", speaker: str | None = None) -> Audio:
        """Not implemented: raises ``NotImplementedError`` after validating arguments."""
        check_text(text)
        resolve(style, speaker)
        raise NotImplementedError(
            "OpenAITTS (gpt-4o-mini-tts) is implemented in a later issue; use EspeakTTS offline"
        )


def main(argv: list[str] | None = None) -> None:
    """CLI: synthesise one utterance to a wav file."""
    import soundfile as sf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("text")
    ap.add_argument("--style", default="neutral", choices=list(labels.TTS_STYLES))
    ap.add_argument("--speaker", default=None, choices=list(labels.all_speakers()))
    ap.add_argument("--sample-rate", type=int, default=NATIVE_SR)
    ap.add_argument("--out", default="tts.wav")
    args = ap.parse_args(argv)
    wav, sr = EspeakTTS(args.sample_rate).synthesize(args.text, args.style, args.speaker)
    sf.write(args.out, wav, sr)
    print(f"wrote {args.out}: {wav.size / sr:.2f} s at {sr} Hz, style={args.style}")


if __name__ == "__main__":
    main()
