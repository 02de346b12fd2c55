"""The seed-000 fusion recipes (dual-encoder fusion of Whisper-Base and Dasheng-Base) name the real
encoders, and without a hub a run of one gets as far as it can: it plans, loads Whisper-Base from
its offline copy, and stops on the one thing that is missing -- Dasheng's weights -- in one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SEED_000 = [
    "concat",
    "gated",
    "gated-stft",
    "moe-concat",
    "moe-concat-stft",
    "moe-proj",
    "moe-proj-stft",
    "explicit",
    "implicit",
]


@pytest.mark.parametrize("system", SEED_000)
def test_seed_000_recipes_name_whisper_base_and_dasheng_base(system: str) -> None:
    recipe = yaml.safe_load((REPO / "recipes" / "fusion" / f"{system}.yaml").read_text())
    names = [e if isinstance(e, str) else e["name"] for e in recipe["model"]["encoder_args"]["encoders"]]
    assert names == ["whisper-base", "dasheng-base"]


def test_seed_000_run_offline_stops_only_on_the_dasheng_weights(
    tmp_path: Path, isolated_homes: dict[str, Path]
) -> None:
    # The recipe's own LLM (the hub SmolLM2-135M) is swapped for the local toy LLM: this test is
    # about the encoders.
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "empty_hub_cache"),
        **{k: str(v) for k, v in isolated_homes.items()},
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "xares_fusion.cli",
            "-v",
            "run",
            str(REPO / "recipes" / "fusion" / "gated.yaml"),
            "synthetic",
            "tones",
            "--set",
            "model.llm.name_or_path=toy-llama",
            "--output-dir",
            str(tmp_path / "run"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 5 and "Traceback" not in proc.stderr, proc.stderr[-3000:]  # EncoderError
    assert "parity: departs" in proc.stderr  # planned
    assert "openai/whisper-base is not in the Hugging Face cache: loading its offline copy" in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not load 'mispeech/dasheng-base': HF_HUB_OFFLINE is set" in errors[0], errors
