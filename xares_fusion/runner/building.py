"""Building the model of a run: encoder or fusion, projector and LLM with LoRA, from official initial values."""

from __future__ import annotations

import logging

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from ..config import RecipeConfig
from ..encoders import build_encoder, check_encoder
from ..feature_cache import FeatureCache
from ..llm import apply_lora, load_llm
from ..model import AudioLLM
from ..paths import cache_home
from ..projectors import build_projector
from ..stages import cast_frozen_weights
from .planning import Plan

log = logging.getLogger("xares_fusion")


def build_model(recipe: RecipeConfig, task_vocab: list[str] | None = None) -> AudioLLM:
    """Encoder or fusion (checked against the contract) + projector + LLM with LoRA, seeded.
    ``task_vocab``: the training tasks in mixture order (prompt-routed fusions map tasks to experts).
    Under ``optim.precision: bf16`` the weights no stage trains are stored in bf16 (recorded as the
    departure ``frozen_dtype``); the trainable parts stay fp32."""
    # The LLM loads first: building a local model the first time may draw random numbers, and the
    # trainable parts must be initialised the same whether or not it was already built.
    llm, tokenizer = load_llm(recipe.model.llm, recipe.speed.attn_implementation)
    set_seed(recipe.optim.seed)
    encoder = build_encoder(recipe.model.encoder, recipe.model.encoder_args)
    summary = check_encoder(recipe.model.encoder, encoder=encoder)
    log.info("encoder check passed: %s", summary)
    _official_probe(encoder)
    llm = apply_lora(llm, recipe.model.lora, recipe.speed.lora_dropout_rng)
    projector = build_projector(
        recipe.model.projector.name, encoder.output_dim, llm.config.hidden_size, recipe.model.projector.args
    )
    model = AudioLLM(
        encoder,
        projector,
        llm,
        tokenizer,
        prompt_before_audio=recipe.model.prompt_before_audio,
        task_vocab=task_vocab,
        audio_layout=recipe.model.audio_layout,
        frozen_encoder_mode=recipe.model.frozen_encoder_mode,
    )
    if recipe.optim.precision == "bf16":
        cast = cast_frozen_weights(model, recipe.stages, torch.bfloat16)
        log.info("frozen weights in bf16: %d values", cast)
    return model


def _official_probe(encoder: torch.nn.Module) -> None:
    """Draw what the official encoder check draws from the global generator between building the
    encoder and initialising LoRA and the projector (``check_audio_encoder``: one
    ``torch.randn(3, 50000)`` on the encoder's device, then a forward pass), so that with the
    same seed, encoder and LLM the trainable parts start from the official initial values. Our
    own checker uses a private generator and draws nothing here."""
    params = list(encoder.parameters())
    device = params[0].device if params else torch.device("cpu")
    probe = torch.randn(3, 50000, device=device)
    with torch.no_grad():
        encoder(probe, None)


def apply_tf32(recipe: RecipeConfig) -> None:
    """TF32 matrix products when the recipe asks (``speed.tf32``, a recorded departure); otherwise
    PyTorch's defaults stay, as in the official pipeline."""
    if recipe.speed.tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def build_run_model(plan: Plan, accelerator: Accelerator) -> AudioLLM:
    """The run's model on this process's device, with the recipe's speed options applied."""
    recipe = plan.recipe
    # Built artefacts (the offline and toy LLMs, converted checkpoints) are made on first use,
    # and in a process group transformers' save_pretrained writes from rank 0 only: rank 0
    # builds them while the other ranks wait, then load what it wrote.
    with accelerator.main_process_first():
        model = build_model(recipe, [src.task for src in plan.sources]).to(accelerator.device)
    apply_tf32(recipe)
    if recipe.speed.feature_cache != "off":
        model.feature_cache = FeatureCache(
            cache_home() / "features", recipe.speed.feature_cache, recipe.speed.cache_dtype, recipe.optim.precision
        )
        for encoder in model.encoder.encoders if model.is_fusion else [model.encoder]:
            log.info(model.feature_cache.size_note(encoder))
    return model
