"""The embedded default runs end to end (two training steps, two rows per task: the path, not the
numbers; the numbers come from `make demo`)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from xares_fusion.demo import DEMO_FUSION_NAME, demo_systems, run_demo


def test_demo_path_writes_the_comparison(tmp_path: Path) -> None:
    text = run_demo(tmp_path, max_steps=2, limit=2, progress=False, with_fusion=True)
    table = pd.read_csv(tmp_path / "comparison.tsv", sep="\t", index_col=0)
    systems = demo_systems(with_fusion=True)
    assert list(table.columns) == ["metric", *systems] and DEMO_FUSION_NAME in systems
    assert table[DEMO_FUSION_NAME].notna().all()
    assert {"mini-keywords", "mini-instrument", "mini-asr", "Track A Overall", "Track B Overall", "Overall"} <= set(
        table.index
    )
    # every demo task is scored with its official metric (no caption proxy): no Overall is marked unofficial
    assert set(table.loc[["Overall", "Track A Overall", "Track B Overall"], "metric"]) == {"weighted mean"}
    for name, (encoder, args) in systems.items():
        record = json.loads((tmp_path / name / "result.json").read_text())
        assert record["system"]["encoder"] == encoder and record["system"]["encoder_args"] == args
        assert record["system"]["llm"] == "smollm2-135m-instruct-offline"
    assert "comparison.tsv" in text and "whisper-base-offline" in text
    # how to reproduce each column with `run`
    assert """xares-fusion run logmel demo --encoder-args '{"pool": 8""" in text
