"""`xares-fusion bench` trains as `run` trains: the same stages, data and auxiliary loss weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from xares_fusion.bench import run_bench
from xares_fusion.runner import RunRequest, run

WEAK = [
    {"name": "random", "args": {"output_dim": 12, "pool": 2}},
    {"name": "logmel", "args": {"n_mels": 16, "pool": 4}},
]
MOE = {"encoders": WEAK, "dim": 16, "input": "concat", "num_experts": 4, "top_k": 2}
# A fusion and a projector with auxiliary losses: the recipe overrides the fusion's default weight
# (1e-2), the projector keeps its own (1e-2); an unweighted sum would be far from either.
RECIPE = {
    "name": "bench-aux",
    "model": {
        "encoder": "logmel",
        "llm": {"name_or_path": "toy-llama"},
        "aux_loss_weights": {"moe_balance": 0.5},
        "projector": {"name": "moe-adapter", "args": {"num_experts": 4, "top_k": 2, "expert_hidden": 16}},
    },
    "data": {"mixture": [{"task": "tones"}], "shuffle_buffer": 16},
    "optim": {"lr": 3e-3, "warmup_steps": 1, "batch_size": 4},
}
STEPS = 2
BENCH_OVERRIDES = [f"optim.max_steps={STEPS}", "optim.save_steps=1000000", f"optim.log_steps={STEPS}"]


def test_bench_trains_with_the_aux_loss_weights_of_a_run(
    synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recipe = tmp_path / "bench-aux.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    run(
        RunRequest(
            encoder="moe",
            train=str(recipe),
            eval="tones",
            encoder_args=MOE,
            overrides=BENCH_OVERRIDES,
            output_dir=tmp_path / "run",
            limit=1,
            progress=False,
        )
    )
    ran = json.loads((tmp_path / "run" / "train_log.jsonl").read_text().splitlines()[-1])
    assert ran["loss"] == pytest.approx(
        ran["lm_loss"] + 0.5 * ran["aux/moe_balance"] + 1e-2 * ran["aux/moe_adapter_balance"], rel=1e-5
    )

    with caplog.at_level(logging.INFO, logger="xares_fusion"):
        run_bench("moe", recipe=str(recipe), task="tones", steps=STEPS, rows=2, eval_batch=2, encoder_args=MOE)
    # Parity mode trains first, from the same initial weights and stream as the run.
    benched = next(r.args[1] for r in caplog.records if r.msg == "step %d: %s")
    assert benched["lm_loss"] == pytest.approx(ran["lm_loss"], abs=1e-4)
    assert benched["loss"] == pytest.approx(ran["loss"], abs=1e-4)
