"""The mini suite: a small, real, locally synthesised benchmark in the official shard format.

Speech comes from eSpeak NG (several languages and voice variants, random rate and pitch, noise);
other sounds from numpy (instrument notes, scene textures, events). Everything is a function of the
seed, generated in one fixed order in one process, so two runs with one seed write identical bytes.

Track A mini: keywords, language, speaker, speaker count, instrument, scene, events (multi-label).
Track B mini: English ASR, Mandarin ASR, scene captions with several paraphrased references.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..constants import SAMPLE_RATE
from .shard_writer import build_once, write_shard
from .sounds import EVENTS, INSTRUMENTS, SCENES, place
from .speech import Espeak

VERSION = 2

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "one", "two"]
ENGLISH_VOICES = ["en-us", "en", "en+m1", "en+m3", "en+m7", "en+f1", "en+f2", "en+f4", "en-us+m2", "en-us+f3"]
LANGUAGES = {
    "english": (
        "en-us",
        [
            "the weather is nice today",
            "where is the train station",
            "i would like a cup of tea",
            "my brother lives in the city",
            "we are going to the market",
            "please close the door",
        ],
    ),
    "german": (
        "de",
        [
            "das wetter ist heute schön",
            "wo ist der bahnhof",
            "ich möchte eine tasse tee",
            "mein bruder wohnt in der stadt",
            "wir gehen auf den markt",
            "bitte schließ die tür",
        ],
    ),
    "french": (
        "fr",
        [
            "il fait beau aujourd'hui",
            "où est la gare",
            "je voudrais une tasse de thé",
            "mon frère habite en ville",
            "nous allons au marché",
            "ferme la porte s'il te plaît",
        ],
    ),
    "spanish": (
        "es",
        [
            "hoy hace buen tiempo",
            "dónde está la estación",
            "quisiera una taza de té",
            "mi hermano vive en la ciudad",
            "vamos al mercado",
            "por favor cierra la puerta",
        ],
    ),
    "italian": (
        "it",
        [
            "oggi fa bel tempo",
            "dov'è la stazione",
            "vorrei una tazza di tè",
            "mio fratello vive in città",
            "andiamo al mercato",
            "per favore chiudi la porta",
        ],
    ),
    "mandarin": ("cmn", ["今天天气很好", "火车站在哪里", "我想喝一杯茶", "我哥哥住在城里", "我们去市场", "请把门关上"]),
}
SPEAKERS = {
    "anna": ("en+f2", 70),
    "ben": ("en+m3", 35),
    "carl": ("en+m1", 50),
    "dora": ("en+f4", 85),
    "emil": ("en+m7", 25),
    "fay": ("en+f3", 60),
}
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
# Short sentences (colour, animal, action: 216 of them) keep clips near one second, so that a CPU
# run can learn them; each slot is a word the model must recognise.
COLOURS = ["red", "blue", "green", "yellow", "black", "white"]
ANIMALS = ["cat", "dog", "bird", "fish", "horse", "mouse"]
ACTIONS = ["runs", "sleeps", "jumps", "swims", "eats", "sings"]
MANDARIN = [
    "我们明天去北京",
    "他喜欢喝绿茶",
    "这本书很有意思",
    "今天下午有会议",
    "请打开窗户",
    "学生们在学习中文",
    "我的朋友住在上海",
    "晚上我们一起吃饭",
]
CAPTION_SCENES = {
    "rain": "rain",
    "traffic": "traffic",
    "birds": "birds singing",
    "wind": "wind",
    "machine": "a humming machine",
}
CAPTION_EVENTS = {
    "bell": "a bell rings",
    "beep": "a beep sounds",
    "knock": "someone knocks",
    "siren": "a siren wails",
    "clap": "a hand claps",
}


def _noisy(rng: np.random.Generator, audio: np.ndarray, snr_db: tuple[float, float] = (10, 30)) -> np.ndarray:
    power = float(np.mean(audio**2)) + 1e-9
    noise = rng.standard_normal(len(audio)) * np.sqrt(power / 10 ** (rng.uniform(*snr_db) / 10))
    out = audio + noise
    return (out / max(1e-6, np.abs(out).max()) * rng.uniform(0.3, 0.9)).astype(np.float32)


def _voice(rng: np.random.Generator, text: str, voice: str | None = None, pitch: int | None = None) -> np.ndarray:
    return Espeak.get().say(
        text,
        voice or str(rng.choice(ENGLISH_VOICES)),
        rate=int(rng.integers(140, 210)),
        pitch=pitch if pitch is not None else int(rng.integers(30, 80)),
        seed=int(rng.integers(2**31)),
    )


def _keywords(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    word = str(rng.choice(KEYWORDS))
    return _noisy(rng, _voice(rng, word)), {"label": word}


def _language(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    name = str(rng.choice(list(LANGUAGES)))
    voice, sentences = LANGUAGES[name]
    return _noisy(rng, _voice(rng, str(rng.choice(sentences)), voice)), {"label": name}


def _sentence(rng: np.random.Generator) -> str:
    return "the " + " ".join(str(rng.choice(part)) for part in (COLOURS, ANIMALS, ACTIONS))


def _speaker(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    name = str(rng.choice(list(SPEAKERS)))
    voice, pitch = SPEAKERS[name]
    return _noisy(rng, _voice(rng, _sentence(rng), voice, pitch + int(rng.integers(-5, 6)))), {"label": name}


def _count(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    n = int(rng.integers(1, 4))
    voices = [
        _voice(rng, _sentence(rng), voice, pitch)
        for voice, pitch in (SPEAKERS[s] for s in rng.choice(list(SPEAKERS), n, replace=False))
    ]
    mix = np.zeros(max(len(v) for v in voices))
    for v in voices:
        mix[: len(v)] += v / max(1e-6, np.abs(v).max())
    return _noisy(rng, mix), {"num_speakers": COUNT_WORDS[n]}


def _instrument(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    name = str(rng.choice(list(INSTRUMENTS)))
    return _noisy(rng, INSTRUMENTS[name](rng, rng.uniform(0.8, 1.6)), (20, 40)), {"instrument": name}


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    name = str(rng.choice(list(SCENES)))
    return _noisy(rng, SCENES[name](rng, rng.uniform(1.0, 2.0)), (25, 40)), {"scene": name}


def _events(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    names = sorted(rng.choice(list(EVENTS), int(rng.integers(1, 4)), replace=False).tolist())
    clip = 0.05 * SCENES["wind"](rng, 3.0).astype(np.float64)
    for name in names:
        sound = EVENTS[name](rng)
        place(clip, sound, int(rng.integers(0, max(1, len(clip) - len(sound)))), rng.uniform(0.5, 1.0))
    return _noisy(rng, clip, (25, 40)), {"labels": ";".join(names)}


def _asr(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    text = _sentence(rng)
    return _noisy(rng, _voice(rng, text), (15, 35)), {"text": text}


def _asr_zh(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    text = str(rng.choice(MANDARIN))
    return _noisy(rng, _voice(rng, text, "cmn"), (15, 35)), {"text": text}


def _captions(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    scene = str(rng.choice(list(CAPTION_SCENES)))
    first, second = (str(e) for e in rng.choice(list(CAPTION_EVENTS), 2, replace=False))
    clip = 0.4 * SCENES[scene](rng, 2.4).astype(np.float64)
    place(clip, EVENTS[first](rng), int(0.2 * SAMPLE_RATE), 0.9)
    place(clip, EVENTS[second](rng), int(1.3 * SAMPLE_RATE), 0.9)
    bg, a, b = CAPTION_SCENES[scene], CAPTION_EVENTS[first], CAPTION_EVENTS[second]
    captions = [f"{a} then {b} with {bg}", f"{bg} while {a} and {b}", f"first {a}, then {b}, over {bg}"]
    return _noisy(rng, clip, (25, 40)), {"captions": captions}


TASKS: dict[str, Callable[[np.random.Generator], tuple[np.ndarray, dict]]] = {
    "mini-keywords": _keywords,
    "mini-language": _language,
    "mini-speaker": _speaker,
    "mini-count": _count,
    "mini-instrument": _instrument,
    "mini-scene": _scene,
    "mini-events": _events,
    "mini-asr": _asr,
    "mini-asr-zh": _asr_zh,
    "mini-captions": _captions,
}


@dataclass
class MiniSizes:
    """Clips per task: ``train_shards`` x ``per_shard`` for training, ``test`` in one test shard."""

    train_shards: int = 4
    per_shard: int = 40
    test: int = 96


def _write_task(root: Path, t: int, task: str, seed: int, sizes: MiniSizes) -> None:
    make = TASKS[task]
    shards = [(f"train-{s:03d}", sizes.per_shard) for s in range(sizes.train_shards)] + [("test-000", sizes.test)]
    for s, (name, count) in enumerate(shards):
        rng = np.random.default_rng([seed, t, s])
        write_shard(root / task / f"{name}.tar", ((f"{task}-{name}-{i:05d}", *make(rng)) for i in range(count)))


def make_mini(
    root: Path,
    seed: int = 0,
    sizes: MiniSizes | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write every mini task under ``root/<task>/`` (train-NNN.tar, test-000.tar); skipped when
    ``root`` already holds the same version, seed and sizes.

    Synthesis runs in a freshly spawned process, task after task in a fixed order, so eSpeak NG
    starts from the same state every time and the bytes depend on the seed alone.
    """
    sizes = sizes or MiniSizes()

    def build(directory: Path) -> None:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            for t, task in enumerate(TASKS):
                if progress is not None:
                    progress(task)
                pool.submit(_write_task, directory, t, task, seed, sizes).result()

    return build_once(root, {"version": VERSION, "seed": seed, "sizes": asdict(sizes)}, build, force)
