"""The LLM speed options that change numbers, each opt-in and recorded: the attention kernel
(``speed.attn_implementation``) and LoRA dropout masks drawn from numpy's PCG64
(``speed.lora_dropout_rng``). Their speed is measured by ``xares-fusion bench``, not here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from shard_helpers import TONES_RECIPE

from xares_fusion.config import ConfigError, LLMSpec, load_recipe
from xares_fusion.llm import LLMLoadError, load_llm
from xares_fusion.lora_dropout import PCG64Dropout
from xares_fusion.parity import recipe_departures
from xares_fusion.runner import build_model

P = 0.1


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recipes") / "tones-smoke.yaml"
    path.write_text(TONES_RECIPE)
    return path


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pcg64_masks_keep_one_minus_p_and_scale_with_torchs_arithmetic(dtype: torch.dtype) -> None:
    """Kept fraction within 5 standard deviations of 1 - p on a million values; every kept value
    is exactly what torch's own dropout makes of it (x times 1 / (1 - p) rounded in x's dtype)."""
    torch.manual_seed(0)
    x = (torch.randn(1000, 1000) + 3.0).to(dtype)  # no zeros: a zero output means dropped
    ours = PCG64Dropout(P).train()(x)
    theirs = torch.nn.functional.dropout(x, P, training=True)
    kept = ours != 0
    assert ours.dtype == dtype
    assert abs(kept.double().mean().item() - (1 - P)) < 5 * (P * (1 - P) / x.numel()) ** 0.5
    both = kept & (theirs != 0)
    assert both.sum() > 700_000 and torch.equal(ours[both], theirs[both])
    assert torch.equal(ours[~kept], torch.zeros_like(ours[~kept]))


def test_pcg64_masks_follow_torchs_generator_so_a_restored_state_replays_them() -> None:
    """Each mask is seeded from torch's global generator: the same seed gives the same masks,
    a saved and restored generator state (what a checkpoint keeps) the same next mask, and
    successive calls different masks."""
    x = torch.ones(64, 576)
    dropout = PCG64Dropout(P).train()
    torch.manual_seed(7)
    first, second = dropout(x), dropout(x)
    torch.manual_seed(7)
    assert torch.equal(dropout(x), first)
    state = torch.get_rng_state()
    again = dropout(x)
    torch.set_rng_state(state)
    assert torch.equal(dropout(x), again) and torch.equal(again, second)
    assert not torch.equal(first, second)


def test_pcg64_dropout_is_the_identity_in_evaluation_and_at_p_zero() -> None:
    x = torch.randn(8, 16)
    assert PCG64Dropout(P).eval()(x) is x
    assert PCG64Dropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        PCG64Dropout(1.0)


def _loss(model, train: bool, seed: int = 0) -> torch.Tensor:
    """The model's loss on one fixed batch of two clips, dropout on or off."""
    model.train(train)
    torch.manual_seed(seed)
    audio = torch.randn(2, 8000)
    mask = torch.ones(2, 8000, dtype=torch.long)
    mask[1, 6000:] = 0
    generator_state = torch.get_rng_state()
    with torch.no_grad():
        loss = model(audio, mask, ["What is the tone?"] * 2, ["a high tone", "low"]).lm_loss
    torch.set_rng_state(generator_state)
    return loss


def _trained_lora(model) -> None:
    """LoRA B away from its zero initialisation (as after training), so dropout on LoRA's input
    reaches the loss; the same values in every model."""
    generator = torch.Generator().manual_seed(3)
    for name, param in sorted(model.llm.named_parameters()):
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.1


def test_recipe_options_reach_the_model_and_are_recorded_as_departures(recipe_file: Path) -> None:
    official = build_model(load_recipe(str(recipe_file)))
    recipe = load_recipe(str(recipe_file), ["speed.attn_implementation=eager", "speed.lora_dropout_rng=pcg64"])
    fast = build_model(recipe)
    lora_layers = [m for m in fast.llm.modules() if hasattr(m, "lora_A")]
    dropouts = [m.lora_dropout["default"] for m in lora_layers]
    assert lora_layers and all(isinstance(d, PCG64Dropout) and d.p == P for d in dropouts)
    assert not any(isinstance(m, PCG64Dropout) for m in official.llm.modules())
    assert fast.llm.config._attn_implementation == "eager"
    assert official.llm.config._attn_implementation == "sdpa"
    _trained_lora(official)
    _trained_lora(fast)
    # Same initial weights (building draws nothing more), the same attention up to rounding.
    assert torch.allclose(_loss(fast, train=False), _loss(official, train=False), atol=1e-5)
    # Dropout is on while training: the loss moves with the mask, and the seed fixes the mask.
    assert _loss(fast, train=True) != _loss(fast, train=False)
    assert _loss(fast, train=True, seed=1) == _loss(fast, train=True, seed=1)
    added = set(recipe_departures(recipe)) - set(recipe_departures(load_recipe(str(recipe_file))))
    assert added == {
        "speed.attn_implementation='eager' (official: None)",
        "speed.lora_dropout_rng='pcg64' (official: 'torch')",
    }


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("speed.attn_implementation=flash", "speed.attn_implementation"),
        ("speed.lora_dropout_rng=fast", "speed.lora_dropout_rng"),
    ],
)
def test_an_unknown_speed_option_names_its_field_and_the_choices(recipe_file: Path, override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"field '{field}' must be one of \["):
        load_recipe(str(recipe_file), [override])


def test_a_kernel_that_cannot_load_names_the_field_and_the_way_back(isolated_homes: dict) -> None:
    """flash-attn is not installed here: transformers refuses the kernel while loading, and the
    error names ``speed.attn_implementation`` and says how to go back to the default."""
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(LLMLoadError, match=r"speed.attn_implementation='flash_attention_2'.*leave the field unset"):
        load_llm(LLMSpec(name_or_path="toy-llama"), "flash_attention_2")
