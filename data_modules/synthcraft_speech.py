"""What SynthCraft says and how it sounds: the sentence grammar, the six voices, the emotion
profiles and their espeak settings, and libespeak-ng itself (ctypes), rendering one clip.

The corpus built from these (planning, files, manifests) is :mod:`data_modules.synthcraft`.
"""

from __future__ import annotations

import atexit
import ctypes
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import espeakng_loader
import numpy as np
import soxr

SAMPLING_RATE = 16000  # what synthesize returns, and so the corpus's rate

LEVELS: tuple[str, ...] = ("low", "normal", "high")
SPEEDS: tuple[str, ...] = ("slow", "normal", "fast")


# ----------------------------------------------------------------------------------- grammar
# Nouns and adjectives all start with a consonant so that "a" is always grammatical; no word
# names an emotion, so the text carries none.
DETERMINERS = ("the", "a", "my", "your", "this", "that", "his", "her", "our")
ANIMATE_NOUNS = (
    "dog",
    "cat",
    "bird",
    "horse",
    "rabbit",
    "girl",
    "boy",
    "man",
    "teacher",
    "doctor",
    "farmer",
    "baker",
    "child",
    "friend",
    "neighbor",
)
THING_NOUNS = (
    "ball",
    "box",
    "book",
    "cup",
    "hat",
    "kite",
    "chair",
    "basket",
    "cake",
    "bottle",
    "lamp",
    "bag",
    "letter",
    "coat",
    "picture",
)
PLACE_NOUNS = (
    "house",
    "garden",
    "park",
    "river",
    "tree",
    "car",
    "boat",
    "door",
    "window",
    "bed",
    "road",
    "shop",
    "hill",
    "table",
    "bridge",
)
ADJECTIVES = (
    "little",
    "big",
    "red",
    "blue",
    "green",
    "small",
    "tall",
    "brown",
    "white",
    "black",
    "yellow",
    "heavy",
    "soft",
    "new",
    "bright",
    "dark",
    "quiet",
    "busy",
    "clever",
    "pretty",
    "warm",
    "cold",
    "round",
    "long",
)
TRANSITIVE_VERBS = (
    "found",
    "saw",
    "took",
    "liked",
    "pushed",
    "carried",
    "painted",
    "washed",
    "dropped",
    "followed",
    "watched",
    "bought",
    "kept",
    "moved",
    "opened",
    "cleaned",
    "held",
    "lost",
    "fixed",
    "brought",
)
INTRANSITIVE_VERBS = (
    "slept",
    "waited",
    "played",
    "jumped",
    "laughed",
    "stopped",
    "danced",
    "sat",
    "walked",
    "ran",
    "sang",
    "rested",
    "stayed",
    "smiled",
    "arrived",
)
PREPOSITIONS = ("near", "behind", "under", "beside", "inside", "across", "past")
ADVERBS = ("today", "yesterday", "again", "slowly", "quickly", "later", "tonight", "outside", "together", "early")

_WORD_CLASSES: dict[str, tuple[str, ...]] = {
    "DET": DETERMINERS,
    "ANIM": ANIMATE_NOUNS,
    "THING": THING_NOUNS,
    "PLACE": PLACE_NOUNS,
    "ADJ": ADJECTIVES,
    "VT": TRANSITIVE_VERBS,
    "VI": INTRANSITIVE_VERBS,
    "PREP": PREPOSITIONS,
    "ADV": ADVERBS,
}
# Only content words are emphasised ("the" is never stressed).
_CONTENT_CLASSES = frozenset({"ANIM", "THING", "PLACE", "ADJ", "VT", "VI", "ADV"})

VOCABULARY: tuple[str, ...] = tuple(sorted({w for words in _WORD_CLASSES.values() for w in words}))


def _sentence_shapes() -> dict[int, list[tuple[str, ...]]]:
    """All word-class sequences of the grammar, keyed by length (4..9 words).

    S = subject VP [PP] [ADV]; subject = DET [ADJ] ANIM; VP = VI | VT DET [ADJ] (ANIM|THING);
    PP = PREP DET [ADJ] PLACE.
    """
    subjects = [("DET", "ANIM"), ("DET", "ADJ", "ANIM")]
    vps = [("VI",)] + [("VT", "DET") + adj + (noun,) for adj in ((), ("ADJ",)) for noun in ("ANIM", "THING")]
    pps = [(), ("PREP", "DET", "PLACE"), ("PREP", "DET", "ADJ", "PLACE")]
    advs = [(), ("ADV",)]
    shapes: dict[int, list[tuple[str, ...]]] = {}
    for s in subjects:
        for vp in vps:
            for pp in pps:
                for adv in advs:
                    shape = s + vp + pp + adv
                    if 4 <= len(shape) <= 9:
                        shapes.setdefault(len(shape), []).append(shape)
    return shapes


_SHAPES = _sentence_shapes()

# Sentence lengths per speed bin, chosen so that clips last about 1.5-4 s at every rate.
_WORD_COUNTS: dict[str, tuple[int, ...]] = {
    "slow": (4, 5, 6, 7),
    "normal": (5, 6, 7, 8, 9),
    "fast": (7, 8, 9),
}


def sample_sentence(rng: random.Random, n_words: int) -> tuple[list[str], list[str]]:
    """A random sentence of ``n_words`` words (4..9) and the grammar class of each word."""
    shape = rng.choice(_SHAPES[n_words])
    return [rng.choice(_WORD_CLASSES[c]) for c in shape], list(shape)


# ------------------------------------------------------------------------ voices and profiles
@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an espeak voice variant layered on the US English voice."""

    speaker: str
    variant: str
    gender: str


VOICES: tuple[Voice, ...] = (
    Voice("synthcraft-m2", "m2", "male"),
    Voice("synthcraft-m3", "m3", "male"),
    Voice("synthcraft-m6", "m6", "male"),
    Voice("synthcraft-f1", "f1", "female"),
    Voice("synthcraft-f2", "f2", "female"),
    Voice("synthcraft-f4", "f4", "female"),
)
_VOICE_BY_NAME: dict[str, Voice] = {v.speaker: v for v in VOICES} | {v.variant: v for v in VOICES}

# Bin centres of the espeak parameters and the jitter around them. Centres are several jitter
# widths apart, so the bins never overlap in the audio.
PITCH_LEVELS = {"low": 30, "normal": 50, "high": 75}  # espeakPITCH (0..100)
VOLUME_LEVELS = {"low": 50, "normal": 95, "high": 150}  # espeakVOLUME (amplitude, %)
RATE_LEVELS = {"slow": 115, "normal": 165, "fast": 235}  # espeakRATE (words per minute)
PITCH_JITTER = 4  # +- steps
VOLUME_JITTER = 0.06  # +- fraction
RATE_JITTER = 0.05  # +- fraction
# espeakRANGE widens the melody in Hz while espeakPITCH moves the base geometrically (doubling
# over 50 steps), so a fixed range would give high-pitched clips a flatter melody in semitones.
# The range therefore follows the pitch level, keeping an emotion's melody the same size in
# every pitch bin.
RANGE_CENTRE = 50
RANGE_JITTER = 0.1  # +- fraction


@dataclass(frozen=True)
class EmotionProfile:
    """How an emotion shapes prosody. Bin probabilities are in low/normal/high order."""

    pitch: tuple[float, float, float]
    volume: tuple[float, float, float]
    speed: tuple[float, float, float]
    # Multiplies the voice's own melody span (Hz above its base). It goes into the voice file
    # because espeakRANGE stops at 100, too narrow for a wide happy melody.
    range_scale: float
    # Extra voice-file lines for vocal effort: consonant strength and the loudness contrast
    # between stressed and unstressed syllables.
    effort: tuple[str, ...] = ()


# Every bin keeps a probability >= 0.15 for every emotion; the melody width and the effort
# separate the emotions.
EMOTION_PROFILES: dict[str, EmotionProfile] = {
    "neutral": EmotionProfile((0.2, 0.6, 0.2), (0.2, 0.6, 0.2), (0.2, 0.6, 0.2), 0.8),
    "happy": EmotionProfile((0.15, 0.3, 0.55), (0.15, 0.45, 0.4), (0.15, 0.35, 0.5), 2.1),
    "sad": EmotionProfile(
        (0.55, 0.3, 0.15),
        (0.55, 0.3, 0.15),
        (0.55, 0.3, 0.15),
        0.25,
        ("consonants 70 70", "stressAmp 17 16 18 18 18 18 19 18"),
    ),
    "angry": EmotionProfile(
        (0.2, 0.45, 0.35),
        (0.15, 0.3, 0.55),
        (0.15, 0.35, 0.5),
        1.4,
        ("consonants 190 190", "stressAmp 14 12 23 23 26 26 30 26"),
    ),
}


def espeak_voice_name(voice: str, emotion: str) -> str:
    """The private espeak voice of a speaker (id or variant) in an emotion, e.g. ``m3-sad``."""
    return f"{_VOICE_BY_NAME[voice].variant}-{emotion}"


def realise_settings(
    voice: str, pitch_bin: str, volume_bin: str, speed_bin: str, emotion: str, rng: random.Random
) -> dict[str, Any]:
    """Numeric espeak settings for the bins and emotion, with per-clip jitter.

    Returns ``{voice, pitch, range, rate, volume}``: the private espeak voice (speaker and
    emotion, see :func:`espeak_voice_name`) and the espeakPITCH/RANGE/RATE/VOLUME values.
    """
    pitch = PITCH_LEVELS[pitch_bin] + rng.randint(-PITCH_JITTER, PITCH_JITTER)
    range_ = RANGE_CENTRE * 2 ** ((pitch - 50) / 50) * rng.uniform(1 - RANGE_JITTER, 1 + RANGE_JITTER)
    return {
        "voice": espeak_voice_name(voice, emotion),
        "pitch": pitch,
        "range": min(100, round(range_)),
        "rate": round(RATE_LEVELS[speed_bin] * rng.uniform(1 - RATE_JITTER, 1 + RATE_JITTER)),
        "volume": round(VOLUME_LEVELS[volume_bin] * rng.uniform(1 - VOLUME_JITTER, 1 + VOLUME_JITTER)),
    }


# ------------------------------------------------------------------------------ espeak engine
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE, _ESPEAK_VOLUME, _ESPEAK_PITCH, _ESPEAK_RANGE = 1, 2, 3, 4
_ESPEAK_CHARS_UTF8, _ESPEAK_SSML = 0x1, 0x10
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
# Variant lines replaced by our own (see _write_voices).
_DROPPED_VOICE_KEYS = frozenset({"language", "name", "pitch", "flutter", "roughness", "breath", "breathw"})
# espeak_SetVoiceByFile copies the path into a 60-byte buffer and lowercases it.
_MAX_VOICE_PATH = 59


def _write_voices(data_path: Path) -> Path:
    """Write the private voices (one per speaker and emotion) into a new temporary directory.

    Each is US English plus the speaker's variant, with the emotion's melody span and effort.
    Effects whose state espeak keeps in statics running on across utterances are switched off:
    the pitch flutter phase, the glottal cycle counter that paces "roughness" (values >= 8
    disable it) and the breath noise filters. With them on, a clip's samples would depend on
    the clips the process rendered before.
    """
    base_dir = tempfile.gettempdir()
    if base_dir != base_dir.lower() or len(base_dir) > 30:
        base_dir = "/tmp"
    voice_dir = Path(tempfile.mkdtemp(prefix="sc-", dir=base_dir))
    atexit.register(shutil.rmtree, voice_dir, True)
    language = (data_path / "lang" / "gmw" / "en-US").read_text().splitlines()
    for voice in VOICES:
        variant = (data_path / "voices" / "!v" / voice.variant).read_text().splitlines()
        kept = [ln for ln in variant if ln.split()[:1] and ln.split()[0] not in _DROPPED_VOICE_KEYS]
        # "pitch <base Hz> <top Hz>", espeak's default 82 118: scale the span above the base.
        base, top = next(
            ([int(x) for x in ln.split()[1:3]] for ln in variant if ln.split()[:1] == ["pitch"]), [82, 118]
        )
        for emotion, profile in EMOTION_PROFILES.items():
            name = espeak_voice_name(voice.speaker, emotion)
            path = voice_dir / name
            if len(str(path)) > _MAX_VOICE_PATH:
                raise RuntimeError(f"voice path too long for espeak: {path}")
            span = round((top - base) * profile.range_scale)
            path.write_text(
                "\n".join(
                    [
                        *language,
                        *kept,
                        f"name {name}",
                        f"pitch {base} {base + span}",
                        "flutter 0",
                        "roughness 8",
                        *profile.effort,
                    ]
                )
                + "\n"
            )
    return voice_dir


class _Espeak:
    """The process's libespeak-ng, initialised once, rendering one utterance at a time.

    Reproducibility notes (libespeak-ng 1.52): besides the voice effects disabled in the voice
    files, a ``<speak>`` root element makes espeak re-select the voice through state that
    survives between utterances, so the SSML is sent without one; and noise is drawn from both
    espeak's own generator and libc ``rand()``, so both are seeded per clip.
    """

    def __init__(self, voice_dir: Path | None = None) -> None:

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetVoiceByFile.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data_path = espeakng_loader.get_data_path()
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with data path {data_path}")
        self._chunks: list[np.ndarray] = []
        # Kept on the instance: ctypes does not keep the C callback alive by itself.
        self._callback = _SYNTH_CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self.lib = lib
        self.libc = ctypes.CDLL(None)
        self.libc.srand.argtypes = [ctypes.c_uint]
        self.voice_dir = voice_dir or _write_voices(Path(data_path))

    def _collect(self, wav, num_samples: int, _events) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # continue synthesis

    def synth(self, ssml: str, render: dict[str, Any], noise_seed: int) -> np.ndarray:
        """int16 samples at ``sample_rate`` (empty if espeak failed)."""
        lib = self.lib
        self._chunks = []
        if lib.espeak_SetVoiceByFile(str(self.voice_dir / render["voice"]).encode()) != 0:
            return np.zeros(0, np.int16)
        for param, key in (
            (_ESPEAK_RATE, "rate"),
            (_ESPEAK_VOLUME, "volume"),
            (_ESPEAK_PITCH, "pitch"),
            (_ESPEAK_RANGE, "range"),
        ):
            lib.espeak_SetParameter(param, int(render[key]), 0)
        lib.espeak_ng_SetRandSeed(noise_seed)
        self.libc.srand(noise_seed)
        text = ssml.encode()
        status = lib.espeak_Synth(text, len(text) + 1, 0, 0, 0, _ESPEAK_CHARS_UTF8 | _ESPEAK_SSML, None, None)
        if status != 0 or not self._chunks:
            return np.zeros(0, np.int16)
        return np.concatenate(self._chunks)


_ENGINE: _Espeak | None = None


def _engine() -> _Espeak:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Espeak()
    return _ENGINE


def _init_worker(voice_dir: str) -> None:
    """Pool initializer: a forked worker keeps the parent's engine; a spawned one starts its
    own on the parent's voice files."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Espeak(Path(voice_dir))


def to_ssml(words: list[str], emphasis_index: int | None) -> str:
    """SSML text of a sentence with the emphasised word in ``<emphasis>`` (no ``<speak>`` root,
    see :class:`_Espeak`)."""
    return " ".join(f"<emphasis>{w}</emphasis>" if i == emphasis_index else w for i, w in enumerate(words))


def synthesize(words: list[str], emphasis_index: int | None, render: dict[str, Any], noise_seed: int = 0) -> np.ndarray:
    """Render a sentence with explicit settings (:func:`realise_settings`): float32, 16 kHz."""
    engine = _engine()
    pcm = engine.synth(to_ssml(words, emphasis_index), render, noise_seed & 0x7FFFFFFF)
    if pcm.size == 0:
        return np.zeros(0, np.float32)
    audio = pcm.astype(np.float32) / 32768.0
    return soxr.resample(audio, engine.sample_rate, SAMPLING_RATE).astype(np.float32)


def render_clip(
    text: str,
    voice: str,
    pitch_bin: str,
    volume_bin: str,
    speed_bin: str,
    emotion: str,
    emphasis_index: int | None,
    seed: int,
) -> tuple[np.ndarray, dict]:
    """Render one controlled clip; returns (float32 16 kHz audio, realised numeric settings).

    ``voice`` is a speaker id (``synthcraft-m3``) or variant (``m3``); ``seed`` drives the
    jitter of the numeric settings, so equal arguments give identical audio.
    """
    render = realise_settings(voice, pitch_bin, volume_bin, speed_bin, emotion, random.Random(seed))
    return synthesize(text.split(), emphasis_index, render, seed), render
