"""`xares-fusion bench` trains as `run` trains (the same stages, data and auxiliary loss weights),
measures honestly (CUDA queue drained around every timed region, model FLOPs, peak memory) and
prints a table or one JSON object."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml

from xares_fusion import bench
from xares_fusion.bench import FlopCounter, Measured, ModeResult, measured, peak_bf16_tflops, summarise
from xares_fusion.cli import main
from xares_fusion.config import load_task
from xares_fusion.feature_cache import FeatureCache
from xares_fusion.runner import RunRequest, build_model, make_accelerator, plan_run, run

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


def test_bench_trains_with_the_aux_loss_weights_of_a_run_and_prints_one_json_object(
    synthetic_root: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
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

    # Every mode's timed evaluation runs parity's trained weights (the first evaluation's).
    evaluated: list[dict[str, torch.Tensor]] = []
    timed_eval = bench._eval

    def recording_eval(model, *args):
        evaluated.append({k: v.clone() for k, v in model.trainable_state_dict().items()})
        return timed_eval(model, *args)

    monkeypatch.setattr(bench, "_eval", recording_eval)
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="xares_fusion"):
        argv = ["bench", "moe", "--recipe", str(recipe), "--task", "tones", "--steps", str(STEPS)]
        assert main([*argv, "--rows", "2", "--eval-batch", "2", "--encoder-args", json.dumps(MOE), "--json"]) == 0
    # Parity mode trains first, from the same initial weights and stream as the run.
    benched = next(r.args[1] for r in caplog.records if r.msg == "step %d: %s")
    assert benched["lm_loss"] == pytest.approx(ran["lm_loss"], abs=1e-4)
    assert benched["loss"] == pytest.approx(ran["loss"], abs=1e-4)

    # stdout is exactly one JSON object; everything else went to stderr.
    summary = json.loads(capsys.readouterr().out)
    assert summary["device"]["device"] == "cpu" and summary["device"]["gpu_model"] is None
    assert summary["workload"]["parity_eval_batch"] == 16 and summary["workload"]["eval_batch"] == 2
    modes = summary["modes"]
    assert list(modes) == ["parity", "batched eval", "warm fp32 cache", "warm fp16 cache"]
    parity = modes["parity"]
    assert parity["end_to_end_speedup"] == 1.0 and parity["identical_predictions"] is True
    assert parity["s_per_step"] * parity["steps_per_s"] == pytest.approx(1.0)
    for figures in modes.values():
        assert figures["mfu"] is None  # no bf16 peak on CPU
        assert figures["peak_mem_mb"] > 0 and figures["model_tflops"] > 0
    # The batched evaluation reuses parity's training; the warm caches fill every entry first.
    assert modes["batched eval"]["s_per_step"] == parity["s_per_step"]
    assert parity["final_train_loss"] == pytest.approx(ran["loss"], abs=1e-4)
    assert modes["batched eval"]["identical_predictions"] is True
    assert modes["warm fp32 cache"]["cache_misses"] == 0 and modes["warm fp32 cache"]["cache_hits"] > 0
    assert modes["warm fp32 cache"]["cache_fill_s"] > 0 and parity["cache_fill_s"] is None
    # On a CPU the all-options mode also runs eager attention and PCG64 LoRA dropout; the fp32
    # cache mode keeps the official kernels (its answers must stay parity's).
    assert parity["speed_options"] == modes["warm fp32 cache"]["speed_options"] == {}
    assert modes["warm fp16 cache"]["speed_options"] == {"attn_implementation": "eager", "lora_dropout_rng": "pcg64"}
    # The answers' length is reported with the speed: equal answers, equal token counts.
    assert all(isinstance(figures["answer_tokens"], int) for figures in modes.values())
    assert modes["batched eval"]["answer_tokens"] == parity["answer_tokens"]
    assert len(evaluated) == len(modes)
    assert all(state.keys() == evaluated[0].keys() for state in evaluated)
    assert all(torch.equal(state[k], evaluated[0][k]) for state in evaluated for k in state)
    # Training from a warm fp32 cache computes parity's weights bit for bit; the fp16 one does not.
    assert [figures["identical_trained_weights"] for figures in modes.values()] == [True, True, True, False]


def test_flop_counter_counts_forward_weight_and_input_gradients() -> None:
    frozen, trainable = torch.nn.Linear(4, 3), torch.nn.Linear(3, 5)
    frozen.requires_grad_(False)
    model = torch.nn.Sequential(frozen, trainable)
    counter = FlopCounter(model)
    x = torch.randn(2, 7, 4)
    with torch.no_grad():
        model(x)
    assert counter.flops == 2 * 14 * (4 * 3 + 3 * 5)  # forward only: 2 x weights x positions
    counter.flops = 0
    model(x).sum().backward()
    # The frozen layer's input carries no gradient: forward only. The trainable layer: forward,
    # weight gradient; its input (the frozen layer's output) needs none either.
    assert counter.flops == 2 * 14 * 4 * 3 + 2 * (2 * 14 * 3 * 5)
    # A frozen layer after a trainable one passes the gradient on: forward + input gradient.
    counter.detach()
    model = torch.nn.Sequential(trainable, frozen_after := torch.nn.Linear(5, 2).requires_grad_(False))
    counter = FlopCounter(model)
    model(torch.randn(14, 3)).sum().backward()
    assert counter.flops == 3 * (2 * 14 * 3 * 5) - 2 * 14 * 3 * 5 + 2 * (2 * 14 * 5 * 2)
    conv = torch.nn.Conv1d(2, 6, kernel_size=3, stride=2)
    counter = FlopCounter(conv)
    with torch.no_grad():
        out = conv(torch.randn(1, 2, 11))
    assert counter.flops == 2 * out.shape[-1] * 6 * 2 * 3
    assert frozen_after.weight.grad is None


def test_measured_drains_the_cuda_queue_around_the_region(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: events.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3e9)
    model = torch.nn.Linear(2, 2)
    with measured(model, torch.device("cuda", 0)) as m:
        events.append("work")
    assert events == ["sync", "reset", "work", "sync"]
    assert m.peak_mem_mb == 3000.0 and m.seconds >= 0


def test_peak_bf16_table_knows_common_devices_and_nothing_else() -> None:
    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989
    assert peak_bf16_tflops("NVIDIA H100 PCIe") == 756
    assert peak_bf16_tflops("NVIDIA H200") == 989
    assert peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312
    assert peak_bf16_tflops("NVIDIA L40S") == 362
    assert peak_bf16_tflops("NVIDIA GeForce RTX 4090") == 165
    assert peak_bf16_tflops("NVIDIA H100 NVL") is None  # another peak: unknown rather than wrong
    assert peak_bf16_tflops("NVIDIA T4") is None and peak_bf16_tflops(None) is None


def test_summary_speedup_is_end_to_end_against_parity_and_mfu_uses_the_device_peak(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        bench,
        "device_provenance",
        lambda device: {"device": str(device), "gpu_model": "NVIDIA H200", "cpu_model": None},
    )
    parity = ModeResult("parity", 10, Measured(20.0, 900.0, 10**15), Measured(12.0, 800.0, 10**14), ["a", "b"])
    batched = ModeResult("batched eval", 10, None, Measured(4.0, 1000.0, 10**14), ["a", "b"])
    warm = ModeResult(
        "warm fp16 cache",
        10,
        Measured(5.0, 700.0, 5 * 10**14),
        Measured(3.0, 600.0, 10**14, answer_tokens=7),
        ["a", "c"],
    )
    summary = summarise([parity, batched, warm], torch.device("cuda", 0), {"task": "t"})
    modes = summary["modes"]
    assert summary["device"]["peak_bf16_tflops"] == 989
    assert modes["parity"]["mfu"] == pytest.approx(1.1e15 / 32 / 989e12)  # (train + eval FLOPs) / s / peak
    # batched eval: parity's 20 s of training + its own 4 s of evaluation.
    assert modes["batched eval"]["end_to_end_speedup"] == pytest.approx(32 / 24)
    assert modes["batched eval"]["peak_mem_mb"] == 1000.0 and modes["batched eval"]["s_per_step"] == 2.0
    assert modes["warm fp16 cache"]["end_to_end_speedup"] == pytest.approx(4.0)
    assert modes["warm fp16 cache"]["eval_rows_per_s"] == pytest.approx(2 / 3)  # rows answered / s
    assert [m["identical_predictions"] for m in modes.values()] == [True, True, False]
    assert modes["warm fp16 cache"]["answer_tokens"] == 7
    table = bench.format_bench(summary)
    assert "NVIDIA H200" in table and "4.00x" in table and "Measurement(" not in table


def test_filling_the_cache_leaves_the_random_stream_that_training_draws_from(
    synthetic_root: Path, tmp_path: Path
) -> None:
    # A DataLoader iterator draws its seed from the global generator; were that draw left in, a
    # warm-cache mode would train with other LoRA dropout masks than parity and answer otherwise.
    request = RunRequest("logmel", "synthetic", "tones", overrides=["optim.max_steps=2"], output_dir=tmp_path / "run")
    plan = plan_run(request)
    accelerator = make_accelerator("fp32")
    model = build_model(plan.recipe, [s.task for s in plan.sources])
    model.feature_cache = FeatureCache(tmp_path / "cache", "readwrite", "fp32", "fp32")
    before = torch.random.get_rng_state()
    assert bench._fill_cache(model, plan, load_task("tones"), 2, accelerator) > 0
    assert torch.equal(torch.random.get_rng_state(), before)
    assert model.feature_cache.misses == 2 * plan.recipe.optim.batch_size + 2  # every clip encoded once
