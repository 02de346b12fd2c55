"""Every fusion front-end (and the MoE-Adapter projector) trains end to end on CPU with tiny encoders:
the loss falls, auxiliary losses are logged, routing statistics land in the result record; the
implicit recipe's two stages; the shipped fusion recipes through the CLI with tiny stand-ins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator
from safetensors.torch import load_file

from xares_fusion.cli import main
from xares_fusion.config import ConfigError
from xares_fusion.runner import RunRequest, build_model, plan_run, run, train_stages
from xares_fusion.stages import attach_encoder_lora, merge_encoder_lora

REPO = Path(__file__).resolve().parent.parent
WEAK = [
    {"name": "random", "args": {"output_dim": 12, "pool": 2}},
    {"name": "logmel", "args": {"n_mels": 16, "pool": 4}},
]
RECIPE = {
    "name": "fusion-smoke",
    "model": {"encoder": "logmel", "llm": {"name_or_path": "toy-llama"}},
    "data": {"mixture": [{"task": "tones"}, {"task": "tone-tags"}, {"task": "tone-captions"}], "shuffle_buffer": 16},
    "optim": {"max_steps": 40, "lr": 3e-3, "warmup_steps": 5, "batch_size": 8, "save_steps": 40, "log_steps": 10},
}


def _write_recipe(tmp_path: Path, **changes) -> Path:
    recipe = json.loads(json.dumps(RECIPE))
    for key, value in changes.items():
        section, field = key.split("__")
        recipe[section][field] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


CATALOGUE = [
    ("concat", {"encoders": WEAK, "dim": 16}, None, []),
    ("average", {"encoders": WEAK, "dim": 16}, None, []),
    ("gated", {"encoders": WEAK, "dim": 16, "stft": {"n_fft": 512}}, None, ["mean_gate"]),
    (
        "moe",
        {"encoders": WEAK, "dim": 16, "input": "concat", "num_experts": 4, "top_k": 2},
        None,
        ["expert_load", "router_entropy"],
    ),
    (
        "moe",
        {"encoders": WEAK, "dim": 16, "input": "proj", "num_experts": 4, "top_k": 2},
        None,
        ["expert_load", "router_entropy"],
    ),
    ("explicit", {"encoders": WEAK, "dim": 16, "decor_dim": 8}, None, ["mean_gate", "residual_energy"]),
    (
        "mowe",
        {"encoders": WEAK + [{"name": "stft", "args": {"n_fft": 256}}], "weak_dim": 8},
        None,
        ["dep_choice", "indep_choice"],
    ),
    ("qformer", {"encoders": WEAK, "dim": 16, "window": 5, "hidden_size": 32, "num_heads": 2}, None, []),
    (
        "logmel",
        {"n_mels": 16, "pool": 4},
        {"name": "moe-adapter", "args": {"num_experts": 4, "top_k": 2, "expert_hidden": 16}},
        ["expert_load"],
    ),
]


@pytest.mark.parametrize(
    "encoder,args,projector,stats",
    CATALOGUE,
    ids=["concat", "average", "gated-stft", "moe-concat", "moe-proj", "explicit", "mowe", "qformer", "moe-adapter"],
)
def test_fusion_trains_and_records_routing(
    encoder: str, args: dict, projector: dict | None, stats: list[str], tmp_path: Path, synthetic_root: Path
) -> None:
    changes = {"model__projector": projector} if projector else {}
    result = run(
        RunRequest(
            encoder=encoder,
            train=str(_write_recipe(tmp_path, **changes)),
            eval="tones",
            encoder_args=args,
            output_dir=tmp_path / "run",
            limit=16,
            progress=False,
        )
    )
    history = _history(tmp_path / "run")
    assert history[-1]["lm_loss"] < 0.7 * history[0]["lm_loss"]
    aux = {"moe": "aux/moe_balance", "explicit": "aux/recon", "mowe": "aux/mowe"}.get(encoder)
    if projector:
        aux = "aux/moe_adapter_balance"
    if aux:
        assert aux in history[0] and all(aux in h for h in history)
    routing = result.record["tasks"][0]["routing"]
    part = "projector" if projector else "front_end"
    if stats:
        per_task = routing[part]["per_task"]["tones"]
        assert set(stats) <= set(per_task)
        if "expert_load" in per_task:
            assert sum(per_task["expert_load"]) == pytest.approx(1.0, abs=1e-4)
        if "mean_gate" in per_task:
            assert sum(per_task["mean_gate"]) == pytest.approx(1.0, abs=1e-4)


def test_pam_routes_each_prompt_family_to_its_expert(tmp_path: Path, synthetic_root: Path, tiny_whisper: str) -> None:
    args = {
        "encoders": [
            {"name": "whisper", "args": {"model_name": tiny_whisper, "pad_to_30s": False}},
            {"name": "whisper", "args": {"model_name": tiny_whisper, "pad_to_30s": False, "pool": 2}},
        ],
        "dim": 16,
        "num_routed": 3,
        "num_fused": 2,
    }
    recipe = _write_recipe(
        tmp_path,
        model__prompt_before_audio=True,
        model__aux_loss_weights={"pam_task": 1.0},
        optim__max_steps=60,
        optim__lr=1e-2,
    )
    result = run(
        RunRequest(
            encoder="pam",
            train=str(recipe),
            eval="synthetic",
            encoder_args=args,
            output_dir=tmp_path / "run",
            limit=8,
            progress=False,
        )
    )
    history = _history(tmp_path / "run")
    assert history[-1]["aux/pam_task"] < 0.1 < history[0]["aux/pam_task"]
    routes = {
        t["task"]: t["routing"]["front_end"]["per_task"][t["task"]]["routed_expert"] for t in result.record["tasks"]
    }
    # tasks in mixture order -> experts 0, 1, 2, every row of a task on its own expert
    assert routes == {"tones": [1.0, 0.0, 0.0], "tone-tags": [0.0, 1.0, 0.0], "tone-captions": [0.0, 0.0, 1.0]}
    layer_weights = result.record["tasks"][0]["routing"]["front_end"]["layer_weights"]
    assert set(layer_weights) == {"shared", "expert_1", "expert_2", "expert_3"}
    assert len(layer_weights["shared"]) == 2 and len(layer_weights["shared"][0]) == 2 + 2  # 2 encoders x (3 - 1)


IMPLICIT_STAGES = [
    {
        "name": "adapt",
        "train": ["encoder_lora"],
        "merge": True,
        "optim": {"max_steps": 12, "lr": 1e-2, "log_steps": 4},
        "encoder_lora": {"encoder": 1, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    },
    {"name": "fuse", "train": ["projector", "llm_lora", "front_end"], "optim": {"max_steps": 12, "log_steps": 4}},
]


def test_implicit_injection_runs_both_stages_merges_and_freezes_encoders(
    tmp_path: Path, synthetic_root: Path, tiny_whisper: str
) -> None:
    args = {
        "encoders": [
            WEAK[1],
            {"name": "whisper", "args": {"model_name": tiny_whisper, "pad_to_30s": False, "pool": 2}},
        ],
        "dim": 16,
    }
    recipe = _write_recipe(tmp_path)
    request = RunRequest(
        encoder="gated",
        train=str(recipe),
        eval="tones",
        encoder_args=args,
        overrides=[f"stages={json.dumps(IMPLICIT_STAGES)}"],
        output_dir=tmp_path / "run",
        limit=8,
        progress=False,
    )
    result = run(request)
    assert [s["name"] for s in result.record["train"]["stages"]] == ["adapt", "fuse"]
    adapt = load_file(str(tmp_path / "run/stages/adapt/final/trainable.safetensors"))
    fuse = load_file(str(tmp_path / "run/stages/fuse/final/trainable.safetensors"))
    assert adapt and all("lora_" in k and k.startswith("encoder.encoders.1.") for k in adapt)
    assert fuse and not any(k.startswith("encoder.encoders.") for k in fuse)

    # Rebuild: the pretrained encoder, and the encoder as merged after stage 1 alone.
    plan = plan_run(request)
    pristine = build_model(plan.recipe).encoder.encoders[1].state_dict()
    merged_model = build_model(plan.recipe)
    attach_encoder_lora(merged_model, plan.recipe.stages[0].encoder_lora)
    merged_model.load_state_dict(adapt, strict=False)
    merge_encoder_lora(merged_model, plan.recipe.stages[0].encoder_lora)
    after_stage1 = merged_model.encoder.encoders[1].state_dict()
    assert not any("lora" in name for name, _ in merged_model.encoder.encoders[1].named_modules())
    assert any(not torch.equal(after_stage1[k], pristine[k]) for k in pristine)  # stage 1 adapted it

    # The run's final model (replayed from its stage weights) equals the stage-1 merge: stage 2
    # changed no encoder weight.
    final = build_model(plan.recipe)
    info = train_stages(final, plan, request, Accelerator(cpu=True))
    assert info["trained_this_invocation"] is False
    final_encoder = final.encoder.encoders[1].state_dict()
    assert set(final_encoder) == set(after_stage1)
    assert all(torch.equal(final_encoder[k], after_stage1[k]) for k in after_stage1)


FUSION_RECIPES = sorted((REPO / "recipes" / "fusion").glob("*.yaml"))
STAND_INS = {
    "pam": [
        "model.encoder_args.encoders=[{name: whisper, args: {model_name: TINY, pad_to_30s: false}}, "
        "{name: whisper, args: {model_name: TINY, pad_to_30s: false, pool: 2}}]",
        "model.encoder_args.dim=16",
    ],
    "mowe": [
        "model.encoder_args.encoders=[{name: random, args: {output_dim: 12, pool: 2}}, "
        "{name: logmel, args: {n_mels: 16, pool: 4}}, {name: stft, args: {n_fft: 256}}]",
        "model.encoder_args.weak_dim=8",
    ],
}


@pytest.mark.parametrize("path", FUSION_RECIPES, ids=[p.stem for p in FUSION_RECIPES])
def test_shipped_fusion_recipe_runs_through_the_cli_with_tiny_stand_ins(
    path: Path, tmp_path: Path, synthetic_root: Path, tiny_whisper: str, capsys: pytest.CaptureFixture
) -> None:
    sets = [
        s.replace("TINY", tiny_whisper)
        for s in STAND_INS.get(
            path.stem,
            [
                "model.encoder_args.encoders=[{name: random, args: {output_dim: 12, pool: 2}}, "
                "{name: whisper, args: {model_name: TINY, pad_to_30s: false, pool: 2}}]",
                "model.encoder_args.dim=16",
            ],
        )
    ]
    sets += ["model.llm.name_or_path=toy-llama", "optim.warmup_steps=1", "model.encoder_args.stft.n_fft=512"]
    if "stft" not in path.read_text():
        sets.pop()
    if path.stem == "implicit":
        sets.append("stages=" + json.dumps(IMPLICIT_STAGES).replace('"max_steps": 12', '"max_steps": 2'))
    if path.stem == "qformer":
        sets += ["model.encoder_args.hidden_size=16", "model.encoder_args.num_heads=2", "model.encoder_args.window=5"]
    args = [f"--set={s}" for s in sets]
    assert (
        main(
            [
                "run",
                str(path),
                str(_write_recipe(tmp_path)),
                "tones",
                "--max-steps",
                "2",
                "--limit",
                "4",
                "--output-dir",
                str(tmp_path / "run"),
                "--no-progress",
                *args,
            ]
        )
        == 0
    )
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["system"]["name"] == path.stem and record["tasks"][0]["rows"] == 4
    # Against the official suite the same command gets as far as the data, and says how to fetch it.
    with pytest.raises(Exception, match="fetch-data"):
        plan_run(
            RunRequest(encoder=str(path), train="task1", eval="task1", overrides=sets, output_dir=tmp_path / "task1")
        )


def test_front_end_file_needs_a_model_encoder(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\noptim: {lr: 1.0e-4}\n")
    with pytest.raises(ConfigError, match="bad.yaml: field 'model.encoder' is missing"):
        plan_run(RunRequest(encoder=str(bad), train="synthetic"))
