"""Offline text-to-speech with espeak-ng through ctypes (``espeakng-loader`` wheel).

The kit needs real, intelligible-ish speech to build synthetic stimuli in the
formats of the real datasets. espeak-ng is a small formant synthesiser shipped
as a shared library inside the ``espeakng-loader`` wheel; this module drives it
directly through ctypes in synchronous mode: a synth callback collects the int16
samples the library produces, and ``synthesize`` returns them as float32 in
[-1, 1] at the library's native rate (22050 Hz).

Public API
----------
- ``synthesize(text, voice='en', rate_wpm=160, pitch=50) -> (audio, fs)``
  one utterance, float32 mono ``(samples,)``.
- ``speech_stream(duration_s, voice='en', rate_wpm=160, pitch=50, seed=0)
  -> (audio, fs)`` exactly ``round(duration_s * fs)`` samples of continuous
  speech: sentences from a seeded built-in generator (templates + word lists),
  separated by short random pauses (0.15-0.5 s).
- ``make_sentence(rng) -> str`` and ``list_voices()``.

Voices are espeak-ng voice names, optionally with a variant after ``+``:
``'en'``, ``'en-us'``, ``'en-gb-x-rp'``, ``'en+f3'``, ``'en+m3'``, ``'nl'``,
``'de'``... Unknown voices raise ``EEGKitError``.

Determinism and concurrency: espeak-ng keeps static state between utterances
(wave-generator phase, pitch flutter counters), so the same text synthesised
twice in one process differs slightly. To make every utterance a pure function
of (text, voice, rate, pitch) -- needed for seeded, reproducible datasets -- the
library is loaded fresh for each ``synthesize`` call and unloaded afterwards
(``espeak_Terminate`` + ``dlclose``; ~10 ms). All calls hold a module lock, and
nothing is shared across ``fork``.
"""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from util.errors import EEGKitError

__all__ = ["synthesize", "speech_stream", "make_sentence", "list_voices", "SAMPLE_RATE_HINT"]

SAMPLE_RATE_HINT = 22050  # what espeak-ng produces; the real value is returned by synthesize

# espeak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_ESPEAK_VOLUME = 2
_ESPEAK_PITCH = 3
_ESPEAK_RANGE = 4
_EE_OK = 0

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.Lock()
_state: dict = {"pid": None, "lib": None, "fs": None, "callback": None, "chunks": []}


def _library():
    """Load and initialise a fresh espeak-ng instance (if none is loaded); returns (lib, fs)."""
    if _state["pid"] == os.getpid() and _state["lib"] is not None:
        return _state["lib"], _state["fs"]
    try:
        import espeakng_loader
    except ImportError as exc:  # pragma: no cover - dependency is installed in the kit
        raise EEGKitError(f"espeakng_loader: package not installed ({exc}); pip install espeakng-loader") from exc
    lib_path = espeakng_loader.get_library_path()
    data_path = espeakng_loader.get_data_path()
    try:
        lib = ctypes.CDLL(lib_path)
    except OSError as exc:
        raise EEGKitError(f"{lib_path}: cannot load espeak-ng library ({exc})") from exc
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Terminate.restype = ctypes.c_int
    fs = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
    if fs <= 0:
        raise EEGKitError(f"{data_path}: espeak-ng initialisation failed (code {fs})")

    chunks = []

    def _collect(wav, n_samples, _events):
        if n_samples > 0 and wav:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0  # 0 = continue synthesis

    callback = _SYNTH_CALLBACK(_collect)  # keep a reference: ctypes must not free it
    lib.espeak_SetSynthCallback(callback)
    _state.update(pid=os.getpid(), lib=lib, fs=int(fs), callback=callback, chunks=chunks)
    return lib, int(fs)


def _unload():
    """Terminate and unload the library so the next call starts from clean static state."""
    lib = _state["lib"]
    if lib is None or _state["pid"] != os.getpid():
        _state.update(pid=None, lib=None)
        return
    lib.espeak_Terminate()
    try:
        import _ctypes

        _ctypes.dlclose(lib._handle)
    except (ImportError, OSError, AttributeError):  # pragma: no cover - non-glibc platforms
        pass
    _state.update(pid=None, lib=None)


def list_voices() -> list[str]:
    """Language voice names shipped with the wheel (e.g. 'en', 'en-us', 'nl'); variants via '+f3'."""
    import espeakng_loader

    lang_dir = os.path.join(espeakng_loader.get_data_path(), "lang")
    names = []
    for root, _dirs, files in os.walk(lang_dir):
        names.extend(f.lower() for f in files)
    return sorted(set(names))


def synthesize(text: str, voice: str = "en", rate_wpm: int = 160, pitch: int = 50) -> tuple[np.ndarray, int]:
    """Speak ``text``; returns (audio float32 ``(samples,)`` in [-1, 1], fs).

    ``rate_wpm`` is clipped by espeak-ng to 80-450 words/min, ``pitch`` is 0-100.
    """
    if not isinstance(text, str) or not text.strip():
        raise EEGKitError("speech: text to synthesise is empty")
    if not 0 <= int(pitch) <= 100:
        raise EEGKitError(f"speech: pitch must be in 0..100, got {pitch}")
    with _lock:
        try:
            return _synthesize_locked(text, voice, rate_wpm, pitch)
        finally:
            _unload()


def _synthesize_locked(text, voice, rate_wpm, pitch):
    """Body of ``synthesize``; caller holds the lock and unloads the library afterwards."""
    lib, fs = _library()
    if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
        raise EEGKitError(f"speech: unknown espeak-ng voice {voice!r} (see synthetic.speech.list_voices())")
    lib.espeak_SetParameter(_ESPEAK_RATE, int(rate_wpm), 0)
    lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
    lib.espeak_SetParameter(_ESPEAK_VOLUME, 100, 0)
    chunks = _state["chunks"]
    chunks.clear()
    data = text.encode("utf-8") + b"\0"
    buf = ctypes.create_string_buffer(data)
    err = lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
    lib.espeak_Synchronize()
    if err != _EE_OK:
        raise EEGKitError(f"speech: espeak-ng synthesis failed (code {err}) for voice {voice!r}")
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    chunks.clear()
    audio = samples.astype(np.float32) / 32768.0  # (samples,)
    return audio, fs


# ---------------------------------------------------------------------------
# Seeded sentence generator: templates filled from small word lists.
_WORDS = {
    "name": ["Anna", "the old captain", "my neighbour", "the young doctor", "a tired farmer", "the teacher",
             "Peter", "the little girl", "our guide", "the baker", "a quiet student", "the mayor", "Sophie",
             "the fisherman", "her brother", "the driver"],
    "verb_past": ["walked", "looked", "waited", "listened", "travelled", "smiled", "worked", "wandered",
                  "stayed", "returned", "hurried", "rested"],
    "trans_past": ["found", "carried", "opened", "painted", "forgot", "described", "repaired", "noticed",
                   "bought", "borrowed", "counted", "discovered", "cleaned", "followed"],
    "noun": ["letter", "bicycle", "garden", "window", "basket", "bridge", "lantern", "map", "kettle",
             "violin", "boat", "notebook", "key", "blanket", "clock", "river stone", "photograph", "umbrella"],
    "adj": ["small", "heavy", "bright", "ancient", "wooden", "strange", "quiet", "broken", "golden", "narrow",
            "warm", "dusty", "colourful", "simple"],
    "place": ["the market", "the station", "the forest", "the harbour", "the library", "the village",
              "the mountains", "the kitchen", "the museum", "the old mill", "the beach", "the city square"],
    "time": ["In the morning", "Late at night", "On Sunday", "After the storm", "Before dinner",
             "Every summer", "Years ago", "At dawn", "During the winter", "That afternoon"],
    "reason": ["because it was raining", "because nobody else would", "since the roads were closed",
               "although it was late", "while the others were sleeping", "as the sun went down",
               "because the bell had rung", "before anyone noticed"],
    "feeling": ["happy", "surprised", "worried", "curious", "proud", "calm", "confused", "grateful"],
    "topic": ["the weather", "the history of the town", "music", "the harvest", "old friends",
              "the new railway", "the price of bread", "the stars", "a long journey", "the sea"],
}

_TEMPLATES = [
    "{time}, {name} {verb_past} to {place}.",
    "{name} {trans_past} a {adj} {noun} near {place}.",
    "{time}, {name} {trans_past} the {noun} {reason}.",
    "Nobody knew why {name} {verb_past} so long at {place}.",
    "{name} felt {feeling} when the {adj} {noun} appeared.",
    "We talked about {topic} until {name} {verb_past} home.",
    "The {noun} was {adj}, and {name} was {feeling}.",
    "{time}, we {verb_past} through {place} and talked about {topic}.",
    "Do you remember the {adj} {noun} that {name} {trans_past}?",
    "{name} said that {topic} was more important than the {noun}.",
    "If the {noun} is {adj}, {name} will be {feeling}.",
    "{name} {verb_past} slowly {reason}.",
]


def make_sentence(rng: np.random.Generator) -> str:
    """One English sentence drawn from the template grammar with ``rng``."""
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    fills = {key: words[int(rng.integers(len(words)))] for key, words in _WORDS.items()}
    sentence = template.format(**fills)
    return sentence[0].upper() + sentence[1:]


def speech_stream(duration_s: float, voice: str = "en", rate_wpm: int = 160, pitch: int = 50,
                  seed: int = 0, pause_s: tuple[float, float] = (0.15, 0.5),
                  sentences_per_call: int = 4) -> tuple[np.ndarray, int]:
    """Continuous speech of exactly ``round(duration_s * fs)`` samples.

    Sentences come from ``make_sentence`` seeded with ``seed``; a few sentences are
    synthesised per espeak call (fewer calls, natural intra-call pauses) and calls
    are joined with random silences drawn from ``pause_s``. Leading/trailing
    silence of each call is trimmed so pauses are controlled here.
    Returns (audio float32 ``(samples,)``, fs).
    """
    if duration_s <= 0:
        raise EEGKitError(f"speech: duration_s must be positive, got {duration_s}")
    rng = np.random.default_rng(seed)
    pieces, n_have, n_target = [], 0, None
    while n_target is None or n_have < n_target:
        text = " ".join(make_sentence(rng) for _ in range(sentences_per_call))
        audio, fs = synthesize(text, voice=voice, rate_wpm=rate_wpm, pitch=pitch)
        n_target = int(round(duration_s * fs))
        audio = _trim_silence(audio)
        pause = np.zeros(int(rng.uniform(*pause_s) * fs), np.float32)
        pieces.extend([audio, pause])
        n_have += audio.size + pause.size
    stream = np.concatenate(pieces)[:n_target]  # (n_target,)
    return stream.astype(np.float32, copy=False), fs


def _trim_silence(audio: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Drop leading and trailing samples below ``threshold`` in absolute value."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio[:0]
    return audio[loud[0]:loud[-1] + 1]
