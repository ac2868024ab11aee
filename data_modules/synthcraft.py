"""SynthCraft: the built-in synthetic English speech corpus with exactly known descriptors.

Every clip is an English sentence from a small closed grammar (:data:`VOCABULARY`), rendered by
libespeak-ng (the library shipped with ``espeakng_loader``, driven through ctypes) with chosen
settings, resampled to 16 kHz and stored as 16-bit FLAC. Because the settings are chosen, the
descriptors are ground truth rather than estimates:

* ``gender`` / ``speaker``: one of six espeak voice variants (three male, three female);
* ``pitch``: ``low`` / ``normal`` / ``high`` -- the espeak pitch level, relative to the voice;
* ``volume``: ``low`` / ``normal`` / ``high`` -- the espeak amplitude (never normalised away);
* ``speed``: ``slow`` / ``normal`` / ``fast`` -- the espeak rate in words per minute;
* ``emphasis``: one content word wrapped in SSML ``<emphasis>`` (position ``emphasis_index``).

The emotion (``neutral``, ``happy``, ``sad``, ``angry``; balanced) is a prosody profile
(:data:`EMOTION_PROFILES`): it biases the pitch/volume/speed bins (sad: low, quiet, slow; angry:
loud, fast; happy: high, fast), sets the width of the melody (sad flat ... happy wide) and the
vocal effort (consonant strength, stressed/unstressed loudness contrast), with per-clip jitter
of the numeric settings. Every emotion keeps at least a 15 % chance of every bin, so no single
descriptor gives the emotion away, while the cues together make it learnable from the audio.
Captions describe the descriptors (never the emotion) in the style of SpeechCraft, with several
templates (:data:`CAPTION_TEMPLATES`) that a keyword parser can read back.

Generation is deterministic for a seed: each clip's choices come from a seed derived from
``(seed, split, index)`` and espeak is driven so that a clip's samples do not depend on what the
process rendered before (see :class:`_Espeak`), so parallel workers give the same audio as one.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import inspect
import io
import json
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import soundfile as sf
import soxr
from lhotse import CutSet
from tqdm import tqdm

from data_modules.config import SynthCraftSpec
from data_modules.records import EMOTIONS, make_cut, manifest_path

SIZES = SynthCraftSpec()  # the default split sizes, defined once in the data schema

CORPUS = "synthcraft"
SPLITS: tuple[str, ...] = ("train", "dev", "test")
SYNTHCRAFT_EMOTIONS: tuple[str, ...] = EMOTIONS[:4]  # neutral, happy, sad, angry
SAMPLING_RATE = 16000
MIN_DURATION, MAX_DURATION = 1.0, 6.0
# Bumped whenever the rendered corpus would change, so ensure_synthcraft regenerates.
GENERATOR_VERSION = 1

LEVELS: tuple[str, ...] = ("low", "normal", "high")
SPEEDS: tuple[str, ...] = ("slow", "normal", "fast")

# ----------------------------------------------------------------------------------- grammar
# Nouns and adjectives all start with a consonant so that "a" is always grammatical; no word
# names an emotion, so the text carries none.
DETERMINERS = ("the", "a", "my", "your", "this", "that", "his", "her", "our")
ANIMATE_NOUNS = ("dog", "cat", "bird", "horse", "rabbit", "girl", "boy", "man", "teacher",
                 "doctor", "farmer", "baker", "child", "friend", "neighbor")
THING_NOUNS = ("ball", "box", "book", "cup", "hat", "kite", "chair", "basket", "cake",
               "bottle", "lamp", "bag", "letter", "coat", "picture")
PLACE_NOUNS = ("house", "garden", "park", "river", "tree", "car", "boat", "door", "window",
               "bed", "road", "shop", "hill", "table", "bridge")
ADJECTIVES = ("little", "big", "red", "blue", "green", "small", "tall", "brown", "white",
              "black", "yellow", "heavy", "soft", "new", "bright", "dark", "quiet", "busy",
              "clever", "pretty", "warm", "cold", "round", "long")
TRANSITIVE_VERBS = ("found", "saw", "took", "liked", "pushed", "carried", "painted", "washed",
                    "dropped", "followed", "watched", "bought", "kept", "moved", "opened",
                    "cleaned", "held", "lost", "fixed", "brought")
INTRANSITIVE_VERBS = ("slept", "waited", "played", "jumped", "laughed", "stopped", "danced",
                      "sat", "walked", "ran", "sang", "rested", "stayed", "smiled", "arrived")
PREPOSITIONS = ("near", "behind", "under", "beside", "inside", "across", "past")
ADVERBS = ("today", "yesterday", "again", "slowly", "quickly", "later", "tonight", "outside",
           "together", "early")

_WORD_CLASSES: dict[str, tuple[str, ...]] = {
    "DET": DETERMINERS, "ANIM": ANIMATE_NOUNS, "THING": THING_NOUNS, "PLACE": PLACE_NOUNS,
    "ADJ": ADJECTIVES, "VT": TRANSITIVE_VERBS, "VI": INTRANSITIVE_VERBS, "PREP": PREPOSITIONS,
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
    vps = [("VI",)] + [("VT", "DET") + adj + (noun,) for adj in ((), ("ADJ",))
                       for noun in ("ANIM", "THING")]
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
    "slow": (4, 5, 6, 7), "normal": (5, 6, 7, 8, 9), "fast": (7, 8, 9),
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
    Voice("synthcraft-m2", "m2", "male"), Voice("synthcraft-m3", "m3", "male"),
    Voice("synthcraft-m6", "m6", "male"), Voice("synthcraft-f1", "f1", "female"),
    Voice("synthcraft-f2", "f2", "female"), Voice("synthcraft-f4", "f4", "female"),
)
_VOICE_BY_NAME: dict[str, Voice] = {v.speaker: v for v in VOICES} | {v.variant: v for v in VOICES}

# Bin centres of the espeak parameters and the jitter around them. Centres are several jitter
# widths apart, so the bins never overlap in the audio.
PITCH_LEVELS = {"low": 30, "normal": 50, "high": 75}        # espeakPITCH (0..100)
VOLUME_LEVELS = {"low": 50, "normal": 95, "high": 150}      # espeakVOLUME (amplitude, %)
RATE_LEVELS = {"slow": 115, "normal": 165, "fast": 235}     # espeakRATE (words per minute)
PITCH_JITTER = 4            # +- steps
VOLUME_JITTER = 0.06        # +- fraction
RATE_JITTER = 0.05          # +- fraction
# espeakRANGE widens the melody in Hz while espeakPITCH moves the base geometrically (doubling
# over 50 steps), so a fixed range would give high-pitched clips a flatter melody in semitones.
# The range therefore follows the pitch level, keeping an emotion's melody the same size in
# every pitch bin.
RANGE_CENTRE = 50
RANGE_JITTER = 0.1          # +- fraction


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
    "sad": EmotionProfile((0.55, 0.3, 0.15), (0.55, 0.3, 0.15), (0.55, 0.3, 0.15), 0.25,
                          ("consonants 70 70", "stressAmp 17 16 18 18 18 18 19 18")),
    "angry": EmotionProfile((0.2, 0.45, 0.35), (0.15, 0.3, 0.55), (0.15, 0.35, 0.5), 1.4,
                            ("consonants 190 190", "stressAmp 14 12 23 23 26 26 30 26")),
}


def espeak_voice_name(voice: str, emotion: str) -> str:
    """The private espeak voice of a speaker (id or variant) in an emotion, e.g. ``m3-sad``."""
    return f"{_VOICE_BY_NAME[voice].variant}-{emotion}"


def realise_settings(voice: str, pitch_bin: str, volume_bin: str, speed_bin: str, emotion: str,
                     rng: random.Random) -> dict[str, Any]:
    """Numeric espeak settings for the bins and emotion, with per-clip jitter.

    Returns ``{voice, pitch, range, rate, volume}``: the private espeak voice (speaker and
    emotion, see :func:`espeak_voice_name`) and the espeakPITCH/RANGE/RATE/VOLUME values.
    """
    pitch = PITCH_LEVELS[pitch_bin] + rng.randint(-PITCH_JITTER, PITCH_JITTER)
    range_ = RANGE_CENTRE * 2 ** ((pitch - 50) / 50) * rng.uniform(1 - RANGE_JITTER,
                                                                   1 + RANGE_JITTER)
    return {
        "voice": espeak_voice_name(voice, emotion),
        "pitch": pitch,
        "range": min(100, round(range_)),
        "rate": round(RATE_LEVELS[speed_bin] * rng.uniform(1 - RATE_JITTER, 1 + RATE_JITTER)),
        "volume": round(VOLUME_LEVELS[volume_bin]
                        * rng.uniform(1 - VOLUME_JITTER, 1 + VOLUME_JITTER)),
    }


# ----------------------------------------------------------------------------------- captions
# (body, emphasis clause): the clause is appended only when an emphasised word is known.
CAPTION_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("A {gender} speaker with {pitch} pitch and {volume} volume speaks at a {speed} pace",
     ', emphasizing the word "{emphasis}"'),
    ("Speaking at a {speed} pace, a {gender} speaker uses {pitch} pitch and {volume} volume",
     ', with emphasis on the word "{emphasis}"'),
    ("The {gender} speaker talks with {volume} volume and {pitch} pitch at a {speed} pace",
     ', stressing the word "{emphasis}"'),
    ("With {pitch} pitch and {volume} volume, a {gender} speaker delivers the sentence "
     "at a {speed} pace", ', putting emphasis on the word "{emphasis}"'),
    ("This {gender} speaker has {pitch} pitch and {volume} volume and speaks at a {speed} pace",
     ', and the word "{emphasis}" is emphasized'),
)


def render_caption(attributes: dict, rng: random.Random | None = None,
                   template: int | None = None) -> str:
    """A SpeechCraft-style caption of the descriptors in ``attributes``.

    Needs ``gender``, ``pitch``, ``volume`` and ``speed``; ``emphasis`` is optional. The caption
    always contains "<gender> speaker", "<level> pitch", "<level> volume", "at a <speed> pace"
    and, with an emphasis, 'the word "<word>"'. ``template`` picks a template by index;
    otherwise ``rng`` (or a fresh unseeded one) picks one at random.
    """
    if template is None:
        template = (rng or random.Random()).randrange(len(CAPTION_TEMPLATES))
    body, clause = CAPTION_TEMPLATES[template]
    caption = body.format(**{key: attributes[key] for key in ("gender", "pitch", "volume",
                                                              "speed")})
    if attributes.get("emphasis"):
        caption += clause.format(emphasis=attributes["emphasis"])
    return caption + "."


DESCRIBABLE = ("gender", "pitch", "volume", "speed", "emphasis")


def render_partial_caption(attributes: dict, names: list[str] | tuple[str, ...]) -> str | None:
    """A caption that names only the descriptors in ``names`` (the per-attribute ablation),
    in the wording :func:`explainable_ser.model.prompts.caption_attributes` reads back; ``None``
    when the record has none of them. Deterministic: one fixed template."""
    has = {k: attributes.get(k) for k in DESCRIBABLE if k in names and attributes.get(k) not in (None, "")}
    if not has:
        return None
    caption = f"A {has['gender']} speaker" if "gender" in has else "A speaker"
    levels = [f"{has[k]} {k}" for k in ("pitch", "volume") if k in has]
    if levels:
        caption += " with " + " and ".join(levels)
    caption += f" speaks at a {has['speed']} pace" if "speed" in has else " speaks"
    if "emphasis" in has:
        caption += f', emphasizing the word "{has["emphasis"]}"'
    return caption + "."


# ------------------------------------------------------------------------------ espeak engine
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE, _ESPEAK_VOLUME, _ESPEAK_PITCH, _ESPEAK_RANGE = 1, 2, 3, 4
_ESPEAK_CHARS_UTF8, _ESPEAK_SSML = 0x1, 0x10
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.c_void_p)
# Variant lines replaced by our own (see _write_voices).
_DROPPED_VOICE_KEYS = frozenset({"language", "name", "pitch", "flutter", "roughness", "breath",
                                 "breathw"})
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
        base, top = next(([int(x) for x in ln.split()[1:3]] for ln in variant
                          if ln.split()[:1] == ["pitch"]), [82, 118])
        for emotion, profile in EMOTION_PROFILES.items():
            name = espeak_voice_name(voice.speaker, emotion)
            path = voice_dir / name
            if len(str(path)) > _MAX_VOICE_PATH:
                raise RuntimeError(f"voice path too long for espeak: {path}")
            span = round((top - base) * profile.range_scale)
            path.write_text("\n".join([*language, *kept, f"name {name}",
                                       f"pitch {base} {base + span}", "flutter 0",
                                       "roughness 8", *profile.effort]) + "\n")
    return voice_dir


class _Espeak:
    """The process's libespeak-ng, initialised once, rendering one utterance at a time.

    Reproducibility notes (libespeak-ng 1.52): besides the voice effects disabled in the voice
    files, a ``<speak>`` root element makes espeak re-select the voice through state that
    survives between utterances, so the SSML is sent without one; and noise is drawn from both
    espeak's own generator and libc ``rand()``, so both are seeded per clip.
    """

    def __init__(self, voice_dir: Path | None = None) -> None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetVoiceByFile.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p,
                                     ctypes.c_void_p]
        data_path = espeakng_loader.get_data_path()
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                                 data_path.encode(), 0)
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
        for param, key in ((_ESPEAK_RATE, "rate"), (_ESPEAK_VOLUME, "volume"),
                           (_ESPEAK_PITCH, "pitch"), (_ESPEAK_RANGE, "range")):
            lib.espeak_SetParameter(param, int(render[key]), 0)
        lib.espeak_ng_SetRandSeed(noise_seed)
        self.libc.srand(noise_seed)
        text = ssml.encode()
        status = lib.espeak_Synth(text, len(text) + 1, 0, 0, 0,
                                  _ESPEAK_CHARS_UTF8 | _ESPEAK_SSML, None, None)
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
    return " ".join(f"<emphasis>{w}</emphasis>" if i == emphasis_index else w
                    for i, w in enumerate(words))


def synthesize(words: list[str], emphasis_index: int | None, render: dict[str, Any],
               noise_seed: int = 0) -> np.ndarray:
    """Render a sentence with explicit settings (:func:`realise_settings`): float32, 16 kHz."""
    engine = _engine()
    pcm = engine.synth(to_ssml(words, emphasis_index), render, noise_seed & 0x7FFFFFFF)
    if pcm.size == 0:
        return np.zeros(0, np.float32)
    audio = pcm.astype(np.float32) / 32768.0
    return soxr.resample(audio, engine.sample_rate, SAMPLING_RATE).astype(np.float32)


def render_clip(text: str, voice: str, pitch_bin: str, volume_bin: str, speed_bin: str,
                emotion: str, emphasis_index: int | None, seed: int) -> tuple[np.ndarray, dict]:
    """Render one controlled clip; returns (float32 16 kHz audio, realised numeric settings).

    ``voice`` is a speaker id (``synthcraft-m3``) or variant (``m3``); ``seed`` drives the
    jitter of the numeric settings, so equal arguments give identical audio.
    """
    render = realise_settings(voice, pitch_bin, volume_bin, speed_bin, emotion,
                              random.Random(seed))
    return synthesize(text.split(), emphasis_index, render, seed), render


# --------------------------------------------------------------------------------- the corpus
@dataclass
class ClipPlan:
    """Everything about one clip that is decided before rendering."""

    id: str
    split: str
    seed: int
    transcript: str
    emotion: str
    speaker: str
    gender: str
    attributes: dict[str, Any]
    caption: str


def _derived_seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def plan_split(split: str, n: int, seed: int) -> list[ClipPlan]:
    """The clips of a split: balanced emotions, descriptors drawn from the emotion profiles."""
    emotions = [SYNTHCRAFT_EMOTIONS[i % len(SYNTHCRAFT_EMOTIONS)] for i in range(n)]
    random.Random(_derived_seed(CORPUS, seed, split, "emotions")).shuffle(emotions)
    plans = []
    for index, emotion in enumerate(emotions):
        clip_seed = _derived_seed(CORPUS, seed, split, index)
        rng = random.Random(clip_seed)
        profile = EMOTION_PROFILES[emotion]
        voice = rng.choice(VOICES)
        pitch = rng.choices(LEVELS, weights=profile.pitch)[0]
        volume = rng.choices(LEVELS, weights=profile.volume)[0]
        speed = rng.choices(SPEEDS, weights=profile.speed)[0]
        words, classes = sample_sentence(rng, rng.choice(_WORD_COUNTS[speed]))
        emphasis_index = rng.choice([i for i, c in enumerate(classes) if c in _CONTENT_CLASSES])
        attributes = {
            "gender": voice.gender, "pitch": pitch, "volume": volume, "speed": speed,
            "emphasis": words[emphasis_index], "emphasis_index": emphasis_index,
            "render": realise_settings(voice.speaker, pitch, volume, speed, emotion, rng),
        }
        plans.append(ClipPlan(
            id=f"{CORPUS}-{split}-{index:06d}", split=split, seed=clip_seed,
            transcript=" ".join(words), emotion=emotion, speaker=voice.speaker,
            gender=voice.gender, attributes=attributes, caption=render_caption(attributes, rng),
        ))
    return plans


def _render_to_file(job: tuple[ClipPlan, str]) -> tuple[str, int]:
    """Render a planned clip and write it; returns ("ok", num_samples) or (skip reason, 0)."""
    plan, path = job
    attrs = plan.attributes
    audio = synthesize(plan.transcript.split(), attrs["emphasis_index"], attrs["render"],
                       plan.seed)
    if audio.size == 0 or not np.any(audio):
        return "render_failed", 0
    duration = audio.size / SAMPLING_RATE
    if duration < MIN_DURATION:
        return "too_short", 0
    if duration > MAX_DURATION:
        return "too_long", 0
    # Encoded in memory and written at once: libsndfile's many small writes to a file are
    # several times slower than the encoding itself.
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 32767 / 32768), SAMPLING_RATE, subtype="PCM_16",
             format="FLAC")
    Path(path).write_bytes(buffer.getvalue())
    return "ok", audio.size


def _default_workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(2, cpus or 1))


# Fork where it is safe (Linux): workers start at once instead of re-importing lhotse and
# torch, and share the parent's engine (synchronous output runs no espeak threads).
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"
# Below this many clips per worker, starting workers costs more than it saves.
_MIN_CLIPS_PER_WORKER = 200


def _rendered(jobs: list[tuple[ClipPlan, str]], num_workers: int,
              progress: bool) -> Iterator[tuple[str, int]]:
    """Results of :func:`_render_to_file` for ``jobs``, in order."""
    engine = _engine()  # before forking, so that workers inherit it
    with tqdm(total=len(jobs), desc=CORPUS, unit="clip", disable=not progress) as bar:
        if num_workers <= 1:
            for job in jobs:
                yield _render_to_file(job)
                bar.update()
            return
        ctx = multiprocessing.get_context(_START_METHOD)
        with ctx.Pool(num_workers, initializer=_init_worker,
                      initargs=(str(engine.voice_dir),)) as pool:
            for result in pool.imap(_render_to_file, jobs, chunksize=16):
                yield result
                bar.update()


def generate(out_dir: str | Path, n_train: int = SIZES.n_train, n_dev: int = SIZES.n_dev,
             n_test: int = SIZES.n_test, seed: int = SIZES.seed, num_workers: int | None = None,
             progress: bool = True) -> dict[str, Path]:
    """Generate the corpus into ``out_dir``; returns the manifest path of each split.

    Writes ``audio/{split}/{id}.flac`` (replacing earlier audio of the split), one lhotse CutSet
    manifest per split (:func:`~data_modules.records.manifest_path`) and
    ``synthcraft_report.json`` (kept/skipped counts and hours per split, skip reasons, timing,
    parameters). ``num_workers=None`` uses min(2, CPU count) processes.
    """
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    if any(n < 1 for n in sizes.values()):  # lhotse reads an empty manifest back as None
        raise ValueError(f"every split needs at least one clip, got {sizes}")
    num_workers = _default_workers() if num_workers is None else num_workers
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    out_dir = Path(out_dir)
    start = time.perf_counter()

    jobs: list[tuple[ClipPlan, str]] = []
    for split, n in sizes.items():
        audio_dir = out_dir / "audio" / split
        shutil.rmtree(audio_dir, ignore_errors=True)  # no stale clips from an earlier run
        audio_dir.mkdir(parents=True)
        jobs += [(plan, str(audio_dir / f"{plan.id}.flac")) for plan in plan_split(split, n, seed)]

    workers = min(num_workers, max(1, len(jobs) // _MIN_CLIPS_PER_WORKER))
    cuts: dict[str, list] = {split: [] for split in SPLITS}
    skipped: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    for (plan, path), (status, num_samples) in zip(jobs, _rendered(jobs, workers, progress)):
        if status != "ok":
            skipped[plan.split][status] = skipped[plan.split].get(status, 0) + 1
            continue
        cuts[plan.split].append(make_cut(
            plan.id, path, sampling_rate=SAMPLING_RATE, num_samples=num_samples, corpus=CORPUS,
            split=plan.split, transcript=plan.transcript, caption=plan.caption,
            emotion=plan.emotion, attributes=plan.attributes, speaker=plan.speaker,
            gender=plan.gender, language="en"))

    manifests = {split: manifest_path(out_dir, CORPUS, split) for split in SPLITS}
    for split, path in manifests.items():
        CutSet.from_cuts(cuts[split]).to_file(path)
    elapsed = time.perf_counter() - start

    total_skips: dict[str, int] = {}
    for per_split in skipped.values():
        for reason, count in per_split.items():
            total_skips[reason] = total_skips.get(reason, 0) + count
    report = {
        "corpus": CORPUS,
        "generator_version": GENERATOR_VERSION,
        "params": {"n_train": n_train, "n_dev": n_dev, "n_test": n_test, "seed": seed},
        "splits": {split: {
            "requested": sizes[split],
            "kept": len(cuts[split]),
            "hours": sum(c.duration for c in cuts[split]) / 3600,
            "skipped": skipped[split],
            "manifest": str(manifests[split]),
        } for split in SPLITS},
        "skipped": total_skips,
        "sampling_rate": SAMPLING_RATE,
        "num_workers": workers,
        "generation_seconds": elapsed,
        "clips_per_second": len(jobs) / elapsed,
    }
    (out_dir / f"{CORPUS}_report.json").write_text(json.dumps(report, indent=2))
    return manifests


def read_report(out_dir: str | Path) -> dict[str, Any] | None:
    """The generation report in ``out_dir``; ``None`` if there is none or it is unreadable."""
    try:
        return json.loads((Path(out_dir) / f"{CORPUS}_report.json").read_text())
    except (OSError, ValueError):
        return None


def ensure_synthcraft(out_dir: str | Path, **kw: Any) -> dict[str, Path]:
    """Manifest paths of a SynthCraft corpus in ``out_dir``, generating it only when needed.

    ``kw`` are :func:`generate`'s keyword arguments. The corpus is (re)generated when a manifest
    is missing or the report's sizes, seed or generator version differ from the requested ones.
    """
    defaults = {name: p.default for name, p in inspect.signature(generate).parameters.items()
                if p.default is not inspect.Parameter.empty}
    unknown = set(kw) - set(defaults)
    if unknown:
        raise TypeError(f"unknown arguments for generate(): {sorted(unknown)}")
    wanted = {key: {**defaults, **kw}[key] for key in ("n_train", "n_dev", "n_test", "seed")}
    paths = {split: manifest_path(out_dir, CORPUS, split) for split in SPLITS}
    report = read_report(out_dir)
    if (report is not None and report.get("generator_version") == GENERATOR_VERSION
            and report.get("params") == wanted and all(p.exists() for p in paths.values())):
        return paths
    return generate(out_dir, **kw)
