"""The audio LLM: frozen encoder -> projector -> frozen LLM with LoRA; loss and generation.

Training sequences follow the official layout by default (``audio_layout="official"``): the
projected audio of the batch, padded to its longest clip, then each row's prompt and target
tokens (+EOS), right-padded; positions run 0..L-1 through the audio padding, because the
official forward passes no position ids. ``audio_layout="packed"`` (a recorded departure) builds
each row contiguously instead, ``[valid audio frames][prompt][target + EOS]``, with positions
that count only real tokens, so a clip trains the same whatever the batch's longest clip.

Generation is the same under both: rows are left-padded and contiguous, and generate() derives
positions from the attention mask -- which is what the official generation computes from its
masked middle padding -- so a clip gets the same answer alone or inside a batch of longer clips.

This module knows no files and no CLI: it receives built modules and batches of tensors/strings.
It sees the audio front end only through :class:`~xares_fusion.frontend.FrontEnd` and the
projector only through :class:`~xares_fusion.projectors.Projector`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from peft import PeftModel
from transformers import LogitsProcessorList, PreTrainedTokenizerBase, RepetitionPenaltyLogitsProcessor

from .config.vocabulary import AUDIO_LAYOUTS, FROZEN_ENCODER_MODES
from .encoders.contract import as_front_end
from .frontend import FrontEnd, FusionContext, Stream
from .projectors import Projector
from .tokens import prompt_ids, target_ids


@dataclass
class LALMOutput:
    """Loss of one batch: the LLM's next-token loss plus named auxiliary losses (unweighted)."""

    lm_loss: torch.Tensor
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    num_target_tokens: int = 0


class AudioLLM(torch.nn.Module):
    """Audio front-end + projector + decoder-only LLM (already LoRA-wrapped and frozen).

    ``encoder`` keeps the front end's weights (parameter names ``encoder.*``, as checkpoints and
    final weights store them); ``front_end`` is its interface: the same module for a fusion, an
    adapter around it for a plain contract encoder.
    """

    front_end: FrontEnd

    def __init__(
        self,
        encoder: torch.nn.Module,
        projector: Projector,
        llm: PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        prompt_before_audio: bool = False,
        task_vocab: list[str] | None = None,
        audio_layout: str = "official",
        frozen_encoder_mode: str = "train",
    ) -> None:
        """``encoder``: a fusion or any module that follows the encoder contract.
        ``audio_layout``: "official" or "packed" (see the module docstring).
        ``frozen_encoder_mode``: the mode a frozen single encoder runs in while the model trains.
        "train" is the official behaviour: its freeze loop sets ``param._requires_grad`` (a typo)
        and the Trainer's ``model.train()`` reaches the encoder, so its dropout, layer drop and
        BatchNorm batch statistics act (under no_grad) during training; "eval" runs it in
        inference mode throughout, as intended. Evaluation always uses eval mode."""
        super().__init__()
        if audio_layout not in AUDIO_LAYOUTS:
            raise ValueError(f"audio_layout must be one of {AUDIO_LAYOUTS}, got {audio_layout!r}")
        if frozen_encoder_mode not in FROZEN_ENCODER_MODES:
            raise ValueError(f"frozen_encoder_mode must be one of {FROZEN_ENCODER_MODES}, got {frozen_encoder_mode!r}")
        self.encoder = encoder  # also sets `front_end` (see __setattr__)
        self.projector = projector
        self.llm = llm
        self.tokenizer = tokenizer
        self.prompt_before_audio = prompt_before_audio
        self.audio_layout = audio_layout
        self.frozen_encoder_mode = frozen_encoder_mode
        self.task_vocab = list(task_vocab or [])
        self.feature_cache = None  # a FeatureCache, set by the runner when the recipe asks for one
        if not self.front_end.trainable:
            self.encoder.requires_grad_(False)
        if self.front_end.needs_prompt_state:
            self.front_end.bind_prompt_dim(llm.config.hidden_size)

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name == "encoder":
            # Not a submodule: for a fusion it is `encoder` itself, and registering it twice would
            # duplicate every state-dict entry; an adapter holds no weights of its own. Derived on
            # every assignment, so replacing the encoder (tests, stages) replaces its interface.
            object.__setattr__(self, "front_end", as_front_end(value))

    @property
    def is_fusion(self) -> bool:
        """True when the front end combines sub-encoders (a fusion)."""
        return len(self.front_end.sub_encoders()) > 0

    # -- audio path -------------------------------------------------------------------------
    def encode(
        self, audio: torch.Tensor, audio_mask: torch.Tensor | None, cacheable: list[bool] | None = None
    ) -> list[Stream | None]:
        """The frozen step: every frozen encoder's output, run without gradients, or read from the
        feature cache (``cacheable`` marks the rows it may serve). A fusion gives one stream per
        sub-encoder; a trainable encoder gives None (it runs with gradients in :meth:`embed_audio`).
        A single frozen encoder runs in the mode ``frozen_encoder_mode`` says while the model
        trains, in eval mode otherwise."""
        train_mode = self.training and self.frozen_encoder_mode == "train"
        return self.front_end.encode_streams(audio, audio_mask, self.feature_cache, cacheable, train_mode)

    def embed_audio(
        self,
        streams: list[Stream | None],
        audio: torch.Tensor | None,
        audio_mask: torch.Tensor | None,
        context: FusionContext,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Trainable part of the audio path: fusion (if any) and projector, with their named
        auxiliary losses."""
        features, mask = self.front_end.fuse(streams, audio, audio_mask, context)
        param = next(self.projector.parameters(), None)
        if param is not None:
            features = features.to(param.dtype)
        if self.projector.uses_context:
            embeds, mask = self.projector(features, mask, context)
        else:
            embeds, mask = self.projector(features, mask)
        return embeds, mask.long(), {**self.front_end.aux_losses, **self.projector.aux_losses}

    def _context(self, prompts: list[str], tasks: list[str] | None) -> FusionContext:
        """Task names and, for fusions that route on the prompt (PaM), the LLM's last-layer hidden
        states of each prompt averaged over its tokens (PaM eq. 7 feeds "the last hidden states
        of the prompt" to an FFN; the mean keeps prompts that end alike apart). They come from
        the base LLM with its LoRA adapters switched off, without gradients: a prompt's route
        then does not drift while the adapters train."""
        states = None
        if self.front_end.needs_prompt_state:
            ids = prompt_ids(self.tokenizer, prompts)
            device = self.llm.get_input_embeddings().weight.device
            rows = [self._token_embeddings(row, device) for row in ids]
            embeds, attention, positions = self._pad(rows, left=False)
            with torch.no_grad(), self.llm.disable_adapter():
                hidden = self.llm(
                    inputs_embeds=embeds,
                    attention_mask=attention,
                    position_ids=positions,
                    output_hidden_states=True,
                    logits_to_keep=1,
                ).hidden_states[-1]
            weights = attention[..., None].to(hidden.dtype)
            states = ((hidden * weights).sum(1) / weights.sum(1)).float()
        return FusionContext(tasks=tasks, prompt_states=states, task_vocab=self.task_vocab)

    def routing_stats(self) -> dict[str, dict]:
        """Routing/gating statistics of the front-end and projector since the last reset (the
        parts that keep none are left out)."""
        stats = {"front_end": self.front_end.routing_stats(), "projector": self.projector.routing_stats()}
        return {part: part_stats for part, part_stats in stats.items() if part_stats is not None}

    def reset_routing_stats(self) -> None:
        """Forget the routing statistics of the front-end and projector."""
        self.front_end.reset_stats()
        self.projector.reset_stats()

    def default_aux_weights(self) -> dict[str, float]:
        """The papers' weight of every auxiliary loss the front-end and projector produce (the
        projector's win on a shared name; a recipe's ``model.aux_loss_weights`` wins over both)."""
        return {**self.front_end.default_aux_weights, **self.projector.default_aux_weights}

    # -- text path --------------------------------------------------------------------------
    def _token_embeddings(self, ids: list[int], device: torch.device) -> torch.Tensor:
        table = self.llm.get_input_embeddings()
        return table(torch.tensor(ids, dtype=torch.long, device=device))

    def _rows(
        self,
        audio_embeds: torch.Tensor,
        audio_mask: torch.Tensor,
        prompt_tokens: list[list[int]],
        target_tokens: list[list[int]],
    ) -> tuple[list[torch.Tensor], list[list[int]]]:
        """Contiguous rows [valid audio][prompt][target] (prompt first for prompt-routed
        fusions) and their label ids."""
        rows, labels = [], []
        for i in range(audio_embeds.shape[0]):
            audio_part = audio_embeds[i][audio_mask[i].bool()]
            prompt_part = self._token_embeddings(prompt_tokens[i], audio_embeds.device).to(audio_part.dtype)
            target_part = self._token_embeddings(target_tokens[i], audio_embeds.device).to(audio_part.dtype)
            context = [prompt_part, audio_part] if self.prompt_before_audio else [audio_part, prompt_part]
            rows.append(torch.cat([*context, target_part], dim=0))
            labels.append([-100] * (audio_part.shape[0] + len(prompt_tokens[i])) + target_tokens[i])
        return rows, labels

    def _training_sequence(
        self, audio_embeds: torch.Tensor, audio_mask: torch.Tensor, prompts: list[str], targets: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[list[int]]]:
        """Embeddings, attention mask, position ids and per-row labels of a training batch."""
        p_ids, t_ids = prompt_ids(self.tokenizer, prompts), target_ids(self.tokenizer, targets)
        if self.audio_layout == "packed" or self.prompt_before_audio:
            rows, labels = self._rows(audio_embeds, audio_mask, p_ids, t_ids)
            embeds, attention, positions = self._pad(rows, left=False)
            return embeds, attention, positions, labels
        # Official: [audio block, padded to the batch's longest clip][prompt + target, right-padded].
        text_rows = [
            self._token_embeddings(p + t, audio_embeds.device).to(audio_embeds.dtype) for p, t in zip(p_ids, t_ids)
        ]
        text, text_mask, _ = self._pad(text_rows, left=False)
        embeds = torch.cat([audio_embeds, text], dim=1)
        attention = torch.cat([audio_mask.to(text_mask.dtype), text_mask], dim=1)
        positions = torch.arange(embeds.shape[1], device=embeds.device).expand(embeds.shape[0], -1)
        labels = [[-100] * (audio_embeds.shape[1] + len(p)) + t for p, t in zip(p_ids, t_ids)]
        return embeds, attention, positions, labels

    @staticmethod
    def _pad(rows: list[torch.Tensor], left: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stack rows with padding on one side; returns embeds, attention mask, position ids."""
        length = max(r.shape[0] for r in rows)
        embeds = rows[0].new_zeros(len(rows), length, rows[0].shape[-1])
        mask = torch.zeros(len(rows), length, dtype=torch.long, device=rows[0].device)
        for i, row in enumerate(rows):
            span = slice(length - row.shape[0], length) if left else slice(0, row.shape[0])
            embeds[i, span] = row
            mask[i, span] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return embeds, mask, positions

    # -- training and generation ------------------------------------------------------------
    def forward(
        self,
        audio: torch.Tensor | None,
        audio_mask: torch.Tensor | None,
        prompts: list[str],
        targets: list[str],
        tasks: list[str] | None = None,
        streams: list[Stream | None] | None = None,
        cacheable: list[bool] | None = None,
    ) -> LALMOutput:
        """Next-token loss on target tokens (+EOS) only. ``streams`` (the output of :meth:`encode`,
        e.g. from a cache) skip the frozen encoders; ``tasks`` name each row's task; ``cacheable``
        marks rows the feature cache may serve (not random crops)."""
        if streams is None:
            streams = self.encode(audio, audio_mask, cacheable)
        audio_embeds, embed_mask, aux = self.embed_audio(streams, audio, audio_mask, self._context(prompts, tasks))
        embeds, attention, positions, labels = self._training_sequence(audio_embeds, embed_mask, prompts, targets)
        label_tensor = torch.full(attention.shape, -100, dtype=torch.long, device=embeds.device)
        for i, row_labels in enumerate(labels):
            label_tensor[i, : len(row_labels)] = torch.tensor(row_labels, device=embeds.device)
        # Position t predicts token t + 1: only positions followed by a target token need logits,
        # so the vocabulary projection runs on those alone (the loss is the same mean over targets).
        next_labels = torch.nn.functional.pad(label_tensor[:, 1:], (0, 1), value=-100)
        keep = (next_labels != -100).any(0).nonzero().squeeze(-1)
        logits = self.llm(
            inputs_embeds=embeds, attention_mask=attention, position_ids=positions, logits_to_keep=keep
        ).logits
        kept_labels = next_labels[:, keep]
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), kept_labels.reshape(-1), ignore_index=-100
        )
        return LALMOutput(lm_loss=loss, aux_losses=aux, num_target_tokens=int((kept_labels != -100).sum()))

    @torch.no_grad()
    def generate(
        self,
        audio: torch.Tensor | None,
        audio_mask: torch.Tensor | None,
        prompts: list[str],
        tasks: list[str] | None = None,
        streams: list[Stream | None] | None = None,
        **generation_kwargs,
    ) -> list[str]:
        """Greedy answers for a batch of clips, decoded and stripped."""
        if streams is None:
            streams = self.encode(audio, audio_mask)
        audio_embeds, embed_mask, _ = self.embed_audio(streams, audio, audio_mask, self._context(prompts, tasks))
        rows, _ = self._rows(audio_embeds, embed_mask, prompt_ids(self.tokenizer, prompts), [[] for _ in prompts])
        embeds, attention, _ = self._pad(rows, left=True)
        kwargs = {
            "do_sample": False,
            "num_beams": 1,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            **generation_kwargs,
        }
        # With inputs_embeds only, generate() returns just the new tokens; it derives position
        # ids from the left-padded attention mask, matching the training positions. The
        # repetition penalty sees only generated tokens, as in the official pipeline. It is given
        # as a processor rather than `repetition_penalty=`: from that argument transformers
        # exempts each row's first <left padding> positions of the ids it sees, which here hold
        # only generated tokens, so a padded row would go unpenalised for as many steps as its
        # batch padded it, and batching would change answers.
        penalty = kwargs.pop("repetition_penalty", None)
        processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        if penalty is not None and penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(penalty))
        tokens = self.llm.generate(
            inputs_embeds=embeds, attention_mask=attention, logits_processor=processors, **kwargs
        )
        return [t.strip() for t in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the parameters that train (projector, LoRA, trainable front-end parts)."""
        return {name: p.detach().cpu() for name, p in self.named_parameters() if p.requires_grad}
