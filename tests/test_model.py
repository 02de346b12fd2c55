"""The audio LLM: row layout, padding invariance, frozen base weights, auxiliary losses."""

from __future__ import annotations

from itertools import cycle
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from shard_helpers import padded_features

from xares_fusion.config import OptimSpec
from xares_fusion.frontend import FusionContext, Stream
from xares_fusion.model import AudioLLM
from xares_fusion.projectors import LinearProjector, build_projector
from xares_fusion.stages import set_trainable
from xares_fusion.tokens import prompt_ids, target_ids
from xares_fusion.train import _param_groups, is_complete, train


def _clips(seconds: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    length = int(max(seconds) * 16000)
    audio, mask = torch.zeros(len(seconds), length), torch.zeros(len(seconds), length, dtype=torch.long)
    for i, s in enumerate(seconds):
        n = int(s * 16000)
        audio[i, :n] = 0.1 * torch.randn(n, generator=gen)
        mask[i, :n] = 1
    return audio, mask


def test_rows_are_contiguous_and_loss_only_on_targets(model: AudioLLM) -> None:
    audio, mask = _clips([0.5, 1.0])
    streams = model.encode(audio, mask)
    embeds, emask, _ = model.embed_audio(streams, audio, mask, FusionContext())
    tok = model.tokenizer
    ids, targets = prompt_ids(tok, ["Classify."] * 2), target_ids(tok, ["low", "high"])
    inputs = model._sequence(embeds, emask, ids, targets, block=False)
    prompt = tok("Classify.")["input_ids"]
    for i, (target, frames) in enumerate([("low", 51), ("high", 101)]):
        target_tokens = tok(target + tok.eos_token)["input_ids"]
        assert target_tokens[-1] == tok.eos_token_id
        length = frames + len(prompt) + len(target_tokens)  # no padding inside a row
        assert inputs.attention[i].tolist() == [1] * length + [0] * (inputs.attention.shape[1] - length)
        # the loss reads exactly the target tokens, predicted from the positions just before them
        predicted = inputs.keep[inputs.kept_labels[i] != -100].tolist()
        assert predicted == list(range(frames + len(prompt) - 1, length - 1))
        assert inputs.kept_labels[i][inputs.kept_labels[i] != -100].tolist() == target_tokens
        assert torch.equal(inputs.embeds[i, :frames], embeds[i, :frames])  # valid audio frames first


def _features(seconds: list[float], dim: int = 80, rate: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder outputs for clips of the given lengths, zero beyond each clip (as from any encoder)."""
    return padded_features([int(s * rate) for s in seconds], dim)


def test_answer_is_the_same_alone_and_in_a_batch_of_longer_clips(model: AudioLLM) -> None:
    model.eval()
    features, mask = _features([0.6, 2.5, 4.0])
    prompts = ["Classify the pitch."] * 3
    # Next-token logits of the first clip, left-padded inside the batch vs alone.
    embeds, emask, _ = model.embed_audio([Stream(features, mask)], None, None, FusionContext())
    ids = prompt_ids(model.tokenizer, prompts)
    batch_in = model._sequence(embeds, emask, ids, [[]] * 3, block=False, left=True)
    alone_in = model._sequence(embeds[:1, :60], emask[:1, :60], ids[:1], [[]], block=False, left=True)
    assert batch_in.positions[0, -1] == alone_in.positions[0, -1] == 60 + len(ids[0]) - 1
    with torch.no_grad():
        batch_logits, alone_logits = (
            model.llm(inputs_embeds=x.embeds, attention_mask=x.attention, position_ids=x.positions).logits
            for x in (batch_in, alone_in)
        )
    torch.testing.assert_close(batch_logits[0, -1], alone_logits[0, -1], atol=1e-4, rtol=1e-4)
    # generate() itself: the same greedy tokens, with a repetition penalty strong enough to
    # steer the untrained model (transformers' own `repetition_penalty=` skipped it for as many
    # steps as a row was left-padded, so the padded first row answered differently in a batch).
    for penalty in (1.0, 3.0):
        kwargs = {"max_new_tokens": 12, "repetition_penalty": penalty}
        batched = model.generate(None, None, prompts, streams=[Stream(features, mask)], **kwargs)
        alone = [
            model.generate(
                None, None, prompts[:1], streams=[Stream(features[i : i + 1, :n], mask[i : i + 1, :n])], **kwargs
            )[0]
            for i, n in enumerate([60, 250, 400])
        ]
        assert batched == alone and alone[0] != ""
        if penalty == 1.0:
            unpenalised = alone
    assert alone != unpenalised  # the penalty did act


def test_packed_batch_loss_is_the_token_weighted_mean_of_row_losses(model: AudioLLM) -> None:
    model.eval()
    model.audio_layout = "packed"  # the official layout's positions depend on the batch (test_parity)
    features, mask = _features([0.6, 2.0])
    targets = ["low", "high then mid"]
    batch = model(None, None, ["Describe."] * 2, targets, streams=[Stream(features, mask)])
    rows = [
        model(None, None, ["Describe."], [targets[i]], streams=[Stream(features[i : i + 1, :n], mask[i : i + 1, :n])])
        for i, n in enumerate([60, 200])
    ]
    weighted = sum(r.lm_loss * r.num_target_tokens for r in rows) / sum(r.num_target_tokens for r in rows)
    assert batch.num_target_tokens == sum(r.num_target_tokens for r in rows)
    assert batch.lm_loss.item() == pytest.approx(weighted.item(), rel=1e-5)


class _AuxProjector(LinearProjector):
    """Test projector that reports an auxiliary loss (the mean squared output)."""

    def forward(self, features, mask):
        out, mask = super().forward(features, mask)
        self.aux_losses = {"energy": out.pow(2).mean()}
        return out, mask


def _batches(seconds: list[float]):
    audio, mask = _clips(seconds)
    return cycle(
        [
            {
                "audio": audio,
                "audio_mask": mask,
                "prompts": ["Classify."] * len(seconds),
                "targets": ["low", "high"][: len(seconds)],
            }
        ]
    )


def test_training_adds_weighted_aux_losses_and_keeps_base_weights(model: AudioLLM, tmp_path: Path) -> None:
    model.projector = _AuxProjector(model.encoder.output_dim, model.llm.config.hidden_size)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("projector.") for n in trainable_before)
    optim = OptimSpec(max_steps=6, lr=1e-2, warmup_steps=0, log_steps=1, save_steps=3, batch_size=2)
    summary = train(
        model,
        _batches([0.5, 0.8]),
        optim,
        tmp_path,
        Accelerator(cpu=True),
        aux_loss_weights={"energy": 0.5},
        progress=False,
    )
    for entry in summary.loss_history:
        assert entry["loss"] == pytest.approx(entry["lm_loss"] + 0.5 * entry["aux/energy"], rel=1e-5)
    assert summary.loss_history[-1]["lm_loss"] < summary.loss_history[0]["lm_loss"]
    for name, before in frozen_before.items():
        assert torch.equal(before, dict(model.named_parameters())[name]), f"frozen weight {name} changed"
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable_before[n])]
    assert any("lora_B" in n for n in changed) and "projector.proj.weight" in changed
    assert is_complete(tmp_path) and (tmp_path / "checkpoints" / "step-00000003.pt").is_file()


def test_param_groups_decay_and_projector_learning_rate(model: AudioLLM) -> None:
    groups = _param_groups(model, OptimSpec(lr=1e-3, weight_decay=0.01, projector_lr_scale=10))
    by_name = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        names = [by_name[id(p)] for p in group["params"]]
        projector = all(n.startswith("projector.") for n in names)
        assert projector or not any(n.startswith("projector.") for n in names)
        assert group["lr"] == pytest.approx(1e-2 if projector else 1e-3)
        assert group["weight_decay"] == (
            0.01 if all(dict(model.named_parameters())[n].ndim >= 2 for n in names) else 0.0
        )
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


def test_prompt_before_audio_puts_the_prompt_first(model: AudioLLM) -> None:
    features, mask = _features([0.5])
    embeds, emask, _ = model.embed_audio([Stream(features, mask)], None, None, FusionContext())
    model.prompt_before_audio = True
    try:
        inputs = model._sequence(
            embeds, emask, prompt_ids(model.tokenizer, ["Classify."]), target_ids(model.tokenizer, ["low"]), block=False
        )
    finally:
        model.prompt_before_audio = False
    prompt = model.tokenizer("Classify.")["input_ids"]
    frames = int(mask.sum())
    torch.testing.assert_close(inputs.embeds[0, len(prompt) : len(prompt) + frames], embeds[0, :frames])
    assert int(inputs.keep[0]) == frames + len(prompt) - 1  # no label over the prompt or the audio


def test_default_aux_weights_merge_front_end_and_projector(model: AudioLLM) -> None:
    assert model.default_aux_weights() == {} and model.routing_stats() == {}
    model.projector = build_projector(
        "moe-adapter",
        model.encoder.output_dim,
        model.llm.config.hidden_size,
        {"num_experts": 2, "top_k": 1, "expert_hidden": 8},
    )
    assert model.default_aux_weights() == {"moe_adapter_balance": 1e-2}
    assert model.routing_stats() == {"projector": {"per_task": {}}}


def test_trainable_parts_are_the_modules_weights(model: AudioLLM) -> None:
    for part, expected in (
        ("llm_lora", lambda n: n.startswith("llm.") and "lora_" in n),
        ("projector", lambda n: n.startswith("projector.")),
        ("front_end", lambda n: False),
    ):  # a frozen single encoder
        count = set_trainable(model, [part])
        assert {n for n, p in model.named_parameters() if p.requires_grad} == {
            n for n, _ in model.named_parameters() if expected(n)
        }
        assert count == sum(p.numel() for n, p in model.named_parameters() if expected(n))


def test_standardizing_projector_is_batchnorm_over_the_valid_frames() -> None:
    """Training: each dimension standardised by the valid frames' mean and biased variance, the
    running averages moved as BatchNorm1d(affine=False) moves them; evaluation: by those averages.
    Padding frames change nothing."""
    torch.manual_seed(0)
    features = torch.randn(3, 7, 5) * torch.tensor([1.0, 10.0, 0.1, 3.0, 1.0]) + torch.tensor([18.0, 0, -2, 0, 5])
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    padded = features.clone()
    padded[~mask.bool()] = 1e4  # padding values must not reach the statistics
    projector = LinearProjector(5, 4, standardize=True)
    reference = torch.nn.BatchNorm1d(5, affine=False)
    valid = features[mask.bool()]  # [13, 5]
    for _ in range(3):
        projector.train(), reference.train()
        ours = projector._standardized(padded, mask)
        torch.testing.assert_close(ours[mask.bool()], reference(valid), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(projector.running_mean, reference.running_mean)
        torch.testing.assert_close(projector.running_var, reference.running_var)
    projector.eval(), reference.eval()
    torch.testing.assert_close(projector._standardized(features, mask)[mask.bool()], reference(valid))
    assert set(projector.state_dict()) == {"proj.weight", "proj.bias", "running_mean", "running_var"}
    plain = LinearProjector(5, 4)
    plain.load_state_dict(projector.state_dict(), strict=False)
    torch.testing.assert_close(plain(features, mask)[0], plain.proj(features))  # the official default
    with pytest.raises(ValueError, match="momentum"):
        LinearProjector(5, 4, standardize=True, momentum=0.0)
