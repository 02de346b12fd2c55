"""Training you can trust on several processes and across restarts: the schedule per optimiser
step, DDP with routed experts, one rank's failure stopping all, bitwise resume, gradient
accumulation, and evaluation scored once. Multi-process tests run two CPU processes (torchrun,
gloo; accelerate's own --cpu launcher needs MPI for that)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from itertools import cycle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from shard_helpers import TONES_RECIPE, flac_bytes, write_shard
from transformers import get_scheduler

from xares_fusion.cli import main
from xares_fusion.config import ConfigError, LoraSpec, OptimSpec, load_recipe
from xares_fusion.constants import SAMPLE_RATE
from xares_fusion.data.mixture import MixtureStream, TrainSource
from xares_fusion.encoders import build_encoder
from xares_fusion.llm import apply_lora
from xares_fusion.model import AudioLLM
from xares_fusion.parity import recipe_departures
from xares_fusion.projectors import build_projector
from xares_fusion.runner.planning import world_identity
from xares_fusion.train import FINAL_WEIGHTS, train

# A contract encoder that raises on rank 1 at its third training call (a corrupt shard, say).
FAILING_ENCODER = """
import os

import torch


class FailingEncoder(torch.nn.Module):
    output_dim = 16
    frame_rate = 100.0

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(160, 16)
        self.calls = 0

    def forward(self, audio, audio_attention_mask=None):
        if self.training:
            self.calls += 1
            if os.environ.get("RANK") == "1" and self.calls == 3:
                raise RuntimeError("corrupt shard on rank 1 (forced)")
        frames = audio[:, : audio.shape[1] // 160 * 160].reshape(audio.shape[0], -1, 160)
        mask = torch.ones(frames.shape[:2], dtype=torch.long, device=audio.device)
        if audio_attention_mask is not None:
            mask = audio_attention_mask[:, ::160][:, : frames.shape[1]].long()
        return self.proj(frames) * mask[..., None], mask
"""


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recipes") / "tones-smoke.yaml"
    path.write_text(TONES_RECIPE)
    return path


def _scores(run_dir: Path) -> dict[str, float]:
    frame = pd.read_csv(run_dir / "scores.tsv", sep="\t")
    return dict(zip(frame["Task"], frame["score"]))


def _history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "xares_fusion.cli", "run", *args, "--no-progress"]


def _run_two_processes(
    encoder: str, recipe: Path, out: Path, *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`run ENCODER RECIPE tones` on two CPU processes (torch.distributed.run, gloo) into ``out``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "xares_fusion.cli"]
    command += ["run", encoder, str(recipe), "tones", "--output-dir", str(out), *args, "--no-progress"]
    proc = subprocess.run(
        command, env={**os.environ, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _trained_copy_to_evaluate(run_dir: Path, copy: Path) -> Path:
    """A copy of a finished run without its scores and predictions, to evaluate it again. The
    number of processes is part of the run's identity, so the copy drops ``run.json`` and is
    claimed afresh; its finished training (final weights, completion marker) is reused as it is."""
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "scores")
    for path in copy.glob("predictions_*.csv"):
        path.unlink()
    (copy / "run.json").unlink()
    return copy


def test_two_processes_evaluate_every_row_once_with_the_same_scores(
    recipe: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    """The weights of a one-process run evaluated on two processes: rows are sharded over the
    processes and gathered back, scored once on rank 0; scores and predictions equal the
    single-process run's."""
    trained = tmp_path / "one"
    assert main(["run", "logmel", str(recipe), "tones", "--output-dir", str(trained), "--max-steps", "40"]) == 0
    out = _trained_copy_to_evaluate(trained, tmp_path / "two")
    _run_two_processes("logmel", recipe, out, "--max-steps", "40")
    assert "processes 2" in (out / "log.txt").read_text()  # both ranks took part
    one = pd.read_csv(trained / "predictions_tones.csv")
    two = pd.read_csv(out / "predictions_tones.csv")
    assert len(two) == len(one) == 40 and two["index"].is_unique
    pd.testing.assert_frame_equal(one, two)
    assert _scores(out) == _scores(trained)
    record = json.loads((out / "result.json").read_text())
    assert record["train"]["trained_this_invocation"] is False and record["tasks"][0]["rows"] == 40
    assert (record["processes"], record["global_batch"]) == (2, 16)
    assert json.loads((trained / "result.json").read_text())["global_batch"] == 8


def test_parity_two_processes_train_on_one_schedule_and_evaluate_every_row_once(
    recipe: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    """DDP training on two CPU processes from scratch: each rank reads its own seeded stream, the
    gradients are averaged, the learning rate logged at every step is the one-process schedule's
    (one scheduler step per optimiser step, not one per process), rank 0 alone writes
    checkpoints; the model learns the task and every eval row is scored once."""
    out = tmp_path / "ddp"
    _run_two_processes("logmel", recipe, out, "--max-steps", "60", "--set", "optim.log_steps=1")
    assert "processes 2" in (out / "log.txt").read_text()
    history = _history(out)
    assert [h["step"] for h in history] == list(range(1, 61))
    assert history[-1]["loss"] < history[0]["loss"] / 4
    # The one-process schedule: linear, warmup 10, 60 steps, lr 3e-3, the rate used by each step.
    scheduler = get_scheduler(
        "linear", torch.optim.SGD([torch.zeros(1)], lr=3e-3), num_warmup_steps=10, num_training_steps=60
    )
    expected = []
    for _ in range(60):
        expected.append(scheduler.get_last_lr()[0])
        scheduler.step()
    assert [h["lr"] for h in history] == pytest.approx(expected, rel=1e-9)
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["step-00000020.pt", "step-00000040.pt"]
    rows = pd.read_csv(out / "predictions_tones.csv")
    assert len(rows) == 40 and rows["index"].tolist() == list(range(40))
    assert _scores(out)["tones"] >= 0.9


CPU_SPEED_OPTIONS = ["--set", "speed.attn_implementation=eager", "--set", "speed.lora_dropout_rng=pcg64"]


def test_cpu_speed_options_train_on_two_processes_and_evaluate_as_one(
    recipe: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    """Eager attention and PCG64 LoRA dropout under DDP: two processes train with them (the
    replaced dropout modules hold no parameters DDP must know), the record lists both, and the
    sharded evaluation gives the predictions one process gives for the same weights."""
    two = tmp_path / "two"
    _run_two_processes("logmel", recipe, two, "--max-steps", "30", *CPU_SPEED_OPTIONS)
    record = json.loads((two / "result.json").read_text())
    assert record["processes"] == 2
    assert {
        "speed.attn_implementation='eager' (official: None)",
        "speed.lora_dropout_rng='pcg64' (official: 'torch')",
    } <= set(record["parity"]["departures"])
    one = _trained_copy_to_evaluate(two, tmp_path / "one")
    assert (
        main(
            [
                "run",
                "logmel",
                str(recipe),
                "tones",
                "--output-dir",
                str(one),
                "--max-steps",
                "30",
                *CPU_SPEED_OPTIONS,
                "--no-progress",
            ]
        )
        == 0
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(one / "predictions_tones.csv"), pd.read_csv(two / "predictions_tones.csv")
    )
    assert _scores(one) == _scores(two)


ROUTED = {
    "pam": [
        "model.encoder_args={encoders: [{name: whisper, args: {model_name: TINY, pad_to_30s: false}}, "
        "{name: whisper, args: {model_name: TINY, pad_to_30s: false, pool: 2}}], dim: 16, num_routed: 3, num_fused: 2}",
        "model.prompt_before_audio=true",
    ],
    "moe-adapter": [
        "model.encoder_args={n_mels: 16, pool: 4}",
        "model.projector={name: moe-adapter, args: {num_experts: 8, top_k: 1, expert_hidden: 8}}",
    ],
}


@pytest.mark.parametrize("system", sorted(ROUTED))
def test_routed_systems_train_on_two_processes(
    system: str, recipe: Path, synthetic_root: Path, tmp_path: Path, tiny_whisper: str
) -> None:
    """PaM (top-1 routed experts) and the MoE-Adapter projector (top-1 of 8 experts) leave experts
    without a gradient on some steps; they declare it, and DDP looks for such weights."""
    sets = [f"--set={s.replace('TINY', tiny_whisper)}" for s in ROUTED[system]]
    out = tmp_path / system
    encoder = "pam" if system == "pam" else "logmel"
    _run_two_processes(encoder, recipe, out, "--max-steps", "5", "--limit", "4", *sets, "--set", "optim.log_steps=1")
    assert [h["step"] for h in _history(out)] == [1, 2, 3, 4, 5]


def test_a_failure_on_one_rank_stops_every_rank_with_its_message(
    recipe: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    encoder = tmp_path / "failing_encoder.py"
    encoder.write_text(FAILING_ENCODER)
    began = time.time()
    proc = _run_two_processes(str(encoder), recipe, tmp_path / "run", "--max-steps", "20", check=False, timeout=120)
    assert time.time() - began < 60
    assert proc.returncode != 0
    assert "[rank 1] RuntimeError: corrupt shard on rank 1 (forced)" in proc.stderr
    assert not (tmp_path / "run" / "COMPLETE.json").exists()


def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(
    recipe: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    """SIGKILL after the first checkpoint, then resume: the same batches, the same random draws
    (LoRA dropout), so the final trainable weights are bitwise those of an uninterrupted run."""
    args = [str(recipe), "tones", "--max-steps", "16", "--limit", "4", "--set", "optim.log_steps=1"]
    args += ["--set", "optim.save_steps=8"]
    whole = tmp_path / "whole"
    assert main(["run", "logmel", *args, "--output-dir", str(whole), "--no-progress"]) == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli("logmel", *args, "--output-dir", str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while not list((out / "checkpoints").glob("step-*.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoints" / "step-00000008.pt").is_file() and not (out / "COMPLETE.json").exists()
    assert main(["run", "logmel", *args, "--output-dir", str(out), "--no-progress"]) == 0
    assert json.loads((out / "result.json").read_text())["train"]["stages"][0]["resumed_from"] == 8
    resumed, uninterrupted = load_file(str(out / FINAL_WEIGHTS)), load_file(str(whole / FINAL_WEIGHTS))
    assert set(resumed) == set(uninterrupted)
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in resumed)
    tail = {h["step"]: h["loss"] for h in _history(out)}
    assert [tail[h["step"]] for h in _history(whole)[8:]] == [h["loss"] for h in _history(whole)[8:]]


def _mixture_shards(tmp_path: Path) -> list[Path]:
    """Three shards of clips 0.1-0.5 s long with distinct texts (crops and the length sort draw on them)."""
    rng = np.random.default_rng(0)
    return [
        write_shard(
            tmp_path / f"m{s}.tar",
            [
                {
                    "__key__": f"s{s}c{c}",
                    "flac": flac_bytes(rng.uniform(-0.5, 0.5, int(rng.integers(1600, 8000))).astype("float32"), 16000),
                    "json": json.dumps({"text": f"t{s}-{c}"}).encode(),
                }
                for c in range(5)
            ],
        )
        for s in range(3)
    ]


def _stream_batches(shards: list[Path], start_step: int, count: int, workers: int) -> list[tuple]:
    stream = MixtureStream(
        [TrainSource("a", "p", None, shards[:2], 0.6), TrainSource("b", "q", None, shards[2:], 0.4)],
        batch_size=3,
        crop_seconds=0.3,
        sample_rate=SAMPLE_RATE,
        seed=5,
        start_step=start_step,
        shuffle_buffer=8,
        sort_by_length=6,
    )
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    batches = []
    for batch, _ in zip(loader, range(count)):
        batches.append((batch["keys"], batch["targets"], batch["audio"].numpy().tobytes()))
    return batches


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_from_a_data_position_is_the_tail_of_the_stream_from_zero(tmp_path: Path, workers: int) -> None:
    """The batches a resumed run reads: with loader workers, each resumed worker goes on with the
    stream of the worker whose turn it is."""
    shards = _mixture_shards(tmp_path)
    whole = _stream_batches(shards, 0, 8, workers)
    assert len({keys for batch in whole for keys in batch[0]}) > 3  # the stream moves on
    for start in (3, 4):
        assert _stream_batches(shards, start, 8 - start, workers) == whole[start:]


def _accumulation_model(toy_llm) -> AudioLLM:
    torch.manual_seed(0)
    llm, tokenizer = toy_llm
    llm = apply_lora(llm.__class__.from_pretrained(llm.config._name_or_path), LoraSpec(dropout=0.0))
    encoder = build_encoder("logmel")
    return AudioLLM(encoder, build_projector("linear", encoder.output_dim, llm.config.hidden_size), llm, tokenizer)


def test_accumulating_two_batches_equals_one_batch_of_both(toy_llm, tmp_path: Path) -> None:
    """grad_accum_steps=2 on batches of 2 takes the optimiser steps of batches of 4 made of the
    same rows (clips and targets of equal length, so the mean losses weigh rows alike)."""
    rng = np.random.default_rng(1)
    audio = torch.from_numpy(rng.uniform(-0.5, 0.5, (4, 8000)).astype("float32"))
    mask = torch.ones_like(audio, dtype=torch.long)
    targets = ["low", "mid", "mid", "low"]  # as many tokens each

    def batch(rows: slice) -> dict:
        return {"audio": audio[rows], "audio_mask": mask[rows], "prompts": ["Classify."] * 4, "targets": targets[rows]}

    runs = {}
    for name, batches, accum in (
        ("whole", [batch(slice(0, 4))], 1),
        ("halves", [batch(slice(0, 2)), batch(slice(2, 4))], 2),
    ):
        model = _accumulation_model(toy_llm)
        optim = OptimSpec(
            max_steps=3,
            lr=1e-2,
            warmup_steps=0,
            log_steps=1,
            save_steps=2,
            batch_size=4 // accum,
            grad_accum_steps=accum,
        )
        summary = train(model, cycle(batches), optim, tmp_path / name, Accelerator(cpu=True), progress=False)
        checkpoint = torch.load(tmp_path / name / "checkpoints" / "step-00000002.pt", weights_only=False)
        runs[name] = (summary, model.trainable_state_dict(), checkpoint)
    (whole, whole_weights, whole_ckpt), (halves, halves_weights, halves_ckpt) = runs["whole"], runs["halves"]
    assert [h["step"] for h in halves.loss_history] == [1, 2, 3] and halves.steps == 3
    assert halves_ckpt["scheduler"]["last_epoch"] == whole_ckpt["scheduler"]["last_epoch"] == 2
    assert {float(s["step"]) for s in halves_ckpt["optimizer"]["state"].values()} == {2.0}  # two optimiser steps
    assert [h["loss"] for h in halves.loss_history] == pytest.approx([h["loss"] for h in whole.loss_history], rel=1e-5)
    for name, value in whole_weights.items():
        # Adam divides by sqrt(v): where a gradient is ~0, fp32 rounding moves a weight by up to ~lr.
        torch.testing.assert_close(halves_weights[name], value, rtol=1e-3, atol=1e-3)
    initial = _accumulation_model(toy_llm).trainable_state_dict()
    assert any(not torch.equal(whole_weights[n], initial[n]) for n in whole_weights)  # it did train


def test_accumulation_and_world_size_are_recorded_and_part_of_the_identity() -> None:
    official = load_recipe("all")
    accumulated = load_recipe("all", ["optim.grad_accum_steps=2"])
    assert recipe_departures(official) == []
    assert recipe_departures(accumulated) == ["optim.grad_accum_steps=2 (official: 1)"]
    assert world_identity(official, 8) == {"processes": 8, "grad_accum_steps": 1, "global_batch": 32}
    # 2 processes accumulating 2 batches keep the global batch of 4 processes, yet are another run.
    assert world_identity(accumulated, 2)["global_batch"] == world_identity(official, 4)["global_batch"] == 16
    assert world_identity(accumulated, 2) != world_identity(official, 4)
    with pytest.raises(ConfigError, match="grad_accum_steps"):
        load_recipe("all", ["optim.grad_accum_steps=0"])
