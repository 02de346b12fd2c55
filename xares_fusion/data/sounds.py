"""Synthetic non-speech sounds (numpy): instrument notes, scene textures and short events.

Each generator takes a seeded ``numpy.random.Generator`` so that a clip is a pure function of the
seed; all return float32 mono audio at 16 kHz, roughly unit peak before mixing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.signal import butter, sosfilt

from ..constants import SAMPLE_RATE


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE


def _envelope(n: int, attack: float, release: float) -> np.ndarray:
    env = np.ones(n)
    a, r = max(1, int(attack * SAMPLE_RATE)), max(1, int(release * SAMPLE_RATE))
    env[:a] = np.linspace(0, 1, a)
    env[-r:] *= np.linspace(1, 0, r)
    return env


def _band(noise: np.ndarray, low: float, high: float) -> np.ndarray:
    sos = butter(4, [low, min(high, SAMPLE_RATE / 2 - 100)], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return sosfilt(sos, noise)


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / max(1e-9, np.abs(x).max())).astype(np.float32)


# -- instruments: harmonic recipes ------------------------------------------------------------


def _note(
    rng: np.random.Generator, seconds: float, harmonics: list[float], vibrato: float, decay: float, attack: float
) -> np.ndarray:
    f0 = 220.0 * 2 ** (rng.integers(-12, 13) / 12)  # a random note within two octaves
    t = _t(seconds)
    phase = 2 * np.pi * f0 * t + vibrato * np.sin(2 * np.pi * 5.5 * t)
    wave = sum(a * np.sin((k + 1) * phase) for k, a in enumerate(harmonics))
    env = _envelope(len(t), attack, 0.05) * (np.exp(-t * decay) if decay else 1.0)
    return _normalise(wave * env)


INSTRUMENTS: dict[str, Callable[[np.random.Generator, float], np.ndarray]] = {
    "flute": lambda r, s: _note(r, s, [1, 0.1, 0.05], vibrato=0.6, decay=0, attack=0.08),
    "clarinet": lambda r, s: _note(r, s, [1, 0, 0.5, 0, 0.3, 0, 0.2], vibrato=0.1, decay=0, attack=0.04),
    "violin": lambda r, s: _note(r, s, [1 / k for k in range(1, 12)], vibrato=1.2, decay=0, attack=0.15),
    "piano": lambda r, s: _note(r, s, [1, 0.6, 0.35, 0.2, 0.1], vibrato=0, decay=3.0, attack=0.005),
    "organ": lambda r, s: _note(r, s, [1, 1, 0.8, 0.6, 0.6, 0.4, 0.4, 0.3], vibrato=0, decay=0, attack=0.02),
    "trumpet": lambda r, s: _note(r, s, [0.6, 1, 0.9, 0.7, 0.5, 0.35, 0.25, 0.15], vibrato=0.3, decay=0.3, attack=0.03),
}


# -- scenes: textures ---------------------------------------------------------------------------


def _rain(rng: np.random.Generator, s: float) -> np.ndarray:
    n = len(_t(s))
    bed = _band(rng.standard_normal(n), 800, 7000) * 0.5
    drops = np.zeros(n)
    drops[rng.integers(0, n, int(60 * s))] = rng.uniform(0.5, 1, int(60 * s))
    return _normalise(bed + _band(drops, 2000, 7500) * 4)


def _traffic(rng: np.random.Generator, s: float) -> np.ndarray:
    t = _t(s)
    rumble = _band(rng.standard_normal(len(t)), 40, 300) * (1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t))
    horn = np.where((t > s * 0.4) & (t < s * 0.4 + 0.4), np.sin(2 * np.pi * 420 * t) + np.sin(2 * np.pi * 530 * t), 0)
    return _normalise(rumble + 0.3 * horn * (rng.random() < 0.7))


def _birds(rng: np.random.Generator, s: float) -> np.ndarray:
    t = _t(s)
    out = _band(rng.standard_normal(len(t)), 200, 1000) * 0.05
    for start in rng.uniform(0, max(0.01, s - 0.2), int(rng.integers(3, 8))):
        d = rng.uniform(0.05, 0.15)
        seg = (t >= start) & (t < start + d)
        f = np.linspace(rng.uniform(2500, 4000), rng.uniform(3000, 6000), seg.sum())
        out[seg] += np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE) * np.hanning(seg.sum())
    return _normalise(out)


def _wind(rng: np.random.Generator, s: float) -> np.ndarray:
    t = _t(s)
    gust = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 6))
    return _normalise(_band(rng.standard_normal(len(t)), 150, 900) * gust)


def _machine(rng: np.random.Generator, s: float) -> np.ndarray:
    t = _t(s)
    f = rng.choice([50.0, 60.0])
    hum = sum(np.sin(2 * np.pi * f * k * t) / k for k in range(1, 8))
    return _normalise(hum + 0.3 * _band(rng.standard_normal(len(t)), 1000, 4000))


SCENES: dict[str, Callable[[np.random.Generator, float], np.ndarray]] = {
    "rain": _rain,
    "traffic": _traffic,
    "birds": _birds,
    "wind": _wind,
    "machine": _machine,
}


# -- events: short sounds placed in a clip ------------------------------------------------------


def _bell(rng: np.random.Generator) -> np.ndarray:
    t = _t(0.8)
    f = rng.uniform(600, 900)
    partials = [(1, 1), (2.76, 0.6), (5.4, 0.4), (8.93, 0.25)]  # inharmonic, bell-like
    return _normalise(sum(a * np.sin(2 * np.pi * f * k * t) for k, a in partials) * np.exp(-t * 5))


def _beep(rng: np.random.Generator) -> np.ndarray:
    t = _t(0.25)
    return _normalise(np.sin(2 * np.pi * rng.uniform(950, 1050) * t) * _envelope(len(t), 0.005, 0.005))


def _knock(rng: np.random.Generator) -> np.ndarray:
    n = int(0.04 * SAMPLE_RATE)
    hit = _band(rng.standard_normal(n), 100, 900) * np.exp(-np.arange(n) / 120)
    gap = np.zeros(int(rng.uniform(0.12, 0.2) * SAMPLE_RATE))
    return _normalise(np.concatenate([hit, gap, hit, gap, hit]))


def _siren(rng: np.random.Generator) -> np.ndarray:
    t = _t(1.0)
    f = 900 + 300 * np.sin(2 * np.pi * rng.uniform(1.5, 3) * t)
    return _normalise(np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE) * _envelope(len(t), 0.05, 0.05))


def _clap(rng: np.random.Generator) -> np.ndarray:
    n = int(0.08 * SAMPLE_RATE)
    return _normalise(_band(rng.standard_normal(n), 700, 6000) * np.exp(-np.arange(n) / 300))


EVENTS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "bell": _bell,
    "beep": _beep,
    "knock": _knock,
    "siren": _siren,
    "clap": _clap,
}


def place(background: np.ndarray, sound: np.ndarray, start: int, gain: float) -> np.ndarray:
    """Add ``sound`` into ``background`` at sample ``start`` (clipped to the background's end)."""
    end = min(len(background), start + len(sound))
    background[start:end] += gain * sound[: end - start]
    return background
