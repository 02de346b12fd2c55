"""Speech synthesis with eSpeak NG from the `espeakng-loader` package, through ctypes.

No Python binding of espeak-ng ships its own library and voice data, so the few C calls we need
are declared here: initialise with synchronous output and the package's data path, collect the
16-bit samples in a callback, pick a voice, set rate and pitch, synthesise UTF-8 text.

Some voice variants add random breath noise from libc's ``rand()``; every utterance reseeds it
(``espeak_ng_SetRandSeed``). eSpeak also carries synthesis state from one utterance to the next
(re-initialising does not reset it), so output is reproducible for the same sequence of calls in
a fresh process: `make-mini` therefore synthesises in a spawned process of its own.
"""

from __future__ import annotations

import ctypes
from math import gcd

import numpy as np
from scipy.signal import resample_poly

from ..constants import SAMPLE_RATE
from ..errors import DataError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE, _ESPEAK_PITCH, _ESPEAK_RANGE = 1, 3, 4
_ESPEAK_CHARS_UTF8 = 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class SpeechUnavailable(DataError, RuntimeError):
    """eSpeak NG could not be loaded or a voice is missing."""


class Espeak:
    """One eSpeak NG engine per process (the library is a global singleton)."""

    _instance: Espeak | None = None

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:
            raise SpeechUnavailable(
                "speech synthesis needs the 'espeakng-loader' package (pip install espeakng-loader)."
            ) from err
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: the C side holds a pointer
        self.sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0
        )
        if self.sample_rate <= 0:
            raise SpeechUnavailable("espeak_Initialize failed.")
        self._lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> Espeak:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _collect(self, samples, count: int, events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0

    def say(
        self,
        text: str,
        voice: str = "en-us",
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        sample_rate: int = SAMPLE_RATE,
        seed: int = 0,
    ) -> np.ndarray:
        """Float32 mono audio of ``text`` spoken by ``voice`` (e.g. 'en-us', 'de', 'cmn', 'en+f3')."""
        self._lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SpeechUnavailable(f"eSpeak NG has no voice {voice!r}.")
        self._lib.espeak_SetParameter(_ESPEAK_RATE, int(rate), 0)
        self._lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
        self._lib.espeak_SetParameter(_ESPEAK_RANGE, int(pitch_range), 0)
        self._chunks = []
        data = text.encode("utf-8")
        self._lib.espeak_Synth(
            ctypes.c_char_p(data), ctypes.c_size_t(len(data) + 1), 0, 0, 0, _ESPEAK_CHARS_UTF8, None, None
        )
        self._lib.espeak_Synchronize()
        audio = (np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)).astype(np.float32) / 32768
        g = gcd(self.sample_rate, sample_rate)
        return resample_poly(audio, sample_rate // g, self.sample_rate // g).astype(np.float32)
