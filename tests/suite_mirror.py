"""Tiny shards with the official file names and label formats of every Track A/B task.

Every shard a shipped task names is written (one or two short clips each) under the data home,
so the real task files resolve and load unchanged: single labels, ';'-joined multi-labels,
numbers, transcripts (English and Mandarin) and lists of reference captions.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from webdataset import TarWriter

from xares_fusion.config import TaskConfig, load_eval_tasks
from xares_fusion.constants import SAMPLE_RATE
from xares_fusion.data.shards import expand_patterns, repo_base

LABELS = {
    "asvspoof2015": ("binary_spoof", ["genuine", "spoof"]),
    "cremad": ("label", ["angry", "happy", "sad"]),
    "esc-50": ("label", ["dog", "rain", "clock_tick"]),
    "fluentspeechcommands": ("text", ["activate lights kitchen", "decrease heat bedroom"]),
    "freemusicarchive": ("genre", ["Rock", "Hip-Hop"]),
    "fsd50k": ("labels", ["Bark;Dog;Animal", "Rain;Water"]),
    "fsdkaggle2018": ("label", ["Bark", "Cough"]),
    "gtzan": ("genre", ["blues", "jazz"]),
    "libricount": ("num_speakers", [0, 3]),
    "nsynth": ("instrument_family_str", ["guitar", "mallet"]),
    "speechcommandsv1": ("text", ["yes", "no"]),
    "urbansound8k": ("soundevent", ["siren", "dog_bark"]),
    "vocalsound": ("labels", ["laughter", "cough"]),
    "voxceleb1": ("label", ["same", "different"]),
    "voxlingua33": ("label", ["en", "de"]),
    "aishell-1": ("text", ["今天天气很好", "我们去公园"]),
    "librispeech": ("trans", ["HELLO WORLD", "THE CAT SAT"]),
    "clotho": (
        "captions",
        [["a dog barks", "a dog is barking loudly", "barking nearby", "a dog barks twice", "an animal barks"]],
    ),
    "mecat": ("long", ["A dog barks repeatedly while cars pass in the background."]),
    "songdescriber": ("captions", [["a calm piano piece", "slow solo piano"]]),
}
TRAIN_KEYS = {"songdescriber": "caption"}  # its training shards carry a single 'caption'


def _clip(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, (0.1 * rng.standard_normal(3200)).astype(np.float32), SAMPLE_RATE, format="FLAC")
    return buf.getvalue()


def _write(path: Path, task: str, split: str, count: int, rng: np.random.Generator) -> None:
    key, values = LABELS[task]
    key = TRAIN_KEYS.get(task, key) if split == "train" else key
    path.parent.mkdir(parents=True, exist_ok=True)
    with TarWriter(str(path), mtime=0.0) as sink:
        for i in range(count):
            value = values[int(rng.integers(len(values)))]
            if split == "train" and task in TRAIN_KEYS and isinstance(value, list):
                value = value[0]
            sink.write(
                {
                    "__key__": f"{task}-{split}-{path.stem.replace('.', '_')}-{i}",
                    "flac": _clip(rng),
                    "json": json.dumps({key: value}, ensure_ascii=False).encode(),
                }
            )


def write_suite_mirror(group: str = "all") -> list[TaskConfig]:
    """Write every train and eval shard of the group's tasks; returns the tasks."""
    _, tasks = load_eval_tasks(group)
    rng = np.random.default_rng(0)
    for task in tasks:
        base_name = task.name.removesuffix("-single")
        for split, count in (("train", 1), ("eval", 2)):
            spec = task.split(split)
            for name in expand_patterns(spec.shards):
                path = repo_base(spec.repo_id) / name
                if not path.is_file():
                    _write(path, base_name, split, count, rng)
    return tasks
