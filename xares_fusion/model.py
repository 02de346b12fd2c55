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

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from peft import PeftModel
from transformers import LogitsProcessorList, PreTrainedTokenizerBase, RepetitionPenaltyLogitsProcessor

from .config.vocabulary import AUDIO_LAYOUTS, FROZEN_ENCODER_MODES
from .encoders.contract import as_front_end
from .frontend import FrontEnd, FusionContext, Stream
from .projectors import Projector
from .tokens import prompt_ids, target_ids

if TYPE_CHECKING:
    from .data.shards import ClipRef


@dataclass
class LALMOutput:
    """Loss of one batch: the LLM's next-token loss plus named auxiliary losses (unweighted)."""

    lm_loss: torch.Tensor
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    num_target_tokens: int = 0


@dataclass
class LLMInputs:
    """One batch laid out for the LLM, on its device."""

    embeds: torch.Tensor  # [B, L, H]
    attention: torch.Tensor  # [B, L], 1 on real tokens and valid audio frames
    positions: torch.Tensor  # [B, L]
    keep: torch.Tensor  # the positions followed by a target token in some row (logits needed there)
    kept_labels: torch.Tensor  # [B, len(keep)]: the token each kept position predicts, -100 where none
    num_targets: int  # target tokens in the batch


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without waiting for the device: a copy from pageable memory
    synchronises the stream, one from pinned memory is queued like a kernel."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def persistent_buffers(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, buffer)`` for every buffer of ``module`` that its state dict holds (a module's
    ``persistent=False`` buffers, fixed by its code, are left out); names as in the state dict."""
    for prefix, sub in module.named_modules():
        for name, buffer in sub.named_buffers(recurse=False):
            if name not in sub._non_persistent_buffers_set:
                yield (f"{prefix}.{name}" if prefix else name), buffer


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
        self, audio: torch.Tensor, audio_mask: torch.Tensor | None, clips: list[ClipRef | None] | None = None
    ) -> list[Stream | None]:
        """The frozen step: every frozen encoder's output, run without gradients, or read from the
        feature cache (``clips`` names each row's audio; rows without one are computed). A fusion
        gives one stream per sub-encoder; a trainable encoder gives None (it runs with gradients in
        :meth:`embed_audio`).
        A single frozen encoder runs in the mode ``frozen_encoder_mode`` says while the model
        trains, in eval mode otherwise."""
        train_mode = self.training and self.frozen_encoder_mode == "train"
        return self.front_end.encode_streams(audio, audio_mask, self.feature_cache, clips, train_mode)

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
            table = self.llm.get_input_embeddings().weight
            no_audio = table.new_zeros(len(prompts), 0, table.shape[1])
            ids = prompt_ids(self.tokenizer, prompts)
            inputs = self._sequence(no_audio, no_audio[..., 0], ids, [[] for _ in ids], block=False)
            attention = inputs.attention
            with torch.no_grad(), self.llm.disable_adapter():
                hidden = self.llm(
                    inputs_embeds=inputs.embeds,
                    attention_mask=attention,
                    position_ids=inputs.positions,
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
    def _sequence(
        self,
        audio_embeds: torch.Tensor,
        audio_mask: torch.Tensor,
        p_ids: list[list[int]],
        t_ids: list[list[int]],
        block: bool,
        left: bool = False,
    ) -> LLMInputs:
        """The LLM inputs of a batch, built as one gather from the audio frames and the text
        embeddings with indices and labels worked out on the host.

        ``block``: the official layout, every row's audio block padded to the batch's longest
        clip, then its prompt and target, right-padded; positions run through the padding.
        Otherwise rows are contiguous, [valid audio][prompt][target] (prompt first for
        prompt-routed fusions), padded on the left or the right, with positions that count real
        tokens only. The token ids and their lengths are host data already; only the contiguous
        rows read the audio mask back (one host sync), since their layout depends on it. Gathering
        copies values, so the result equals building each row on its own, bit for bit.
        """
        batch, frames, width = audio_embeds.shape
        device = audio_embeds.device
        text_ids = [tok for p, t in zip(p_ids, t_ids) for tok in (*p, *t)]
        table = self.llm.get_input_embeddings()
        # The gather's source rows: the audio frames, each text token, one zero row for padding.
        text = table(_to_device(torch.tensor(text_ids, dtype=torch.long), table.weight.device))
        source = torch.cat(
            [audio_embeds.reshape(-1, width), text.to(device, audio_embeds.dtype), audio_embeds.new_zeros(1, width)]
        )
        pad_index = source.shape[0] - 1
        valid = audio_mask.bool().tolist() if not block and frames else None
        indices, labels, text_start = [], [], batch * frames
        for i, (p, t) in enumerate(zip(p_ids, t_ids)):
            audio = range(i * frames, (i + 1) * frames)
            if valid is not None:
                audio = [i * frames + f for f, v in enumerate(valid[i]) if v]
            prompt = range(text_start, text_start + len(p))
            target = range(text_start + len(p), text_start + len(p) + len(t))
            text_start += len(p) + len(t)
            context = [*prompt, *audio] if self.prompt_before_audio and not block else [*audio, *prompt]
            indices.append([*context, *target])
            labels.append([-100] * len(context) + t)
        length = max(map(len, indices))

        def padded(rows: list[list[int]], fill: int) -> torch.Tensor:
            return torch.tensor(
                [[fill] * (length - len(r)) + r if left else r + [fill] * (length - len(r)) for r in rows]
            )

        index, label = padded(indices, pad_index), padded(labels, -100)
        real = padded([[1] * len(row) for row in indices], 0)
        # Position q predicts token q + 1: only positions followed by a target token need logits.
        keep: set[int] = set()
        for row, t in zip(indices, t_ids):
            first = (length if left else len(row)) - len(t)
            keep.update(range(max(first - 1, 0), first + len(t) - 1))
        next_labels = torch.nn.functional.pad(label[:, 1:], (0, 1), value=-100)
        kept = torch.tensor(sorted(keep), dtype=torch.long)
        if block:  # the audio block's mask is the device's; positions 0..L-1 through the padding
            attention = torch.cat([audio_mask.to(torch.long), _to_device(real[:, frames:], device)], 1)
            positions = torch.arange(length, device=device).expand(batch, -1)
        else:
            attention = _to_device(real, device)
            positions = _to_device((real.cumsum(-1) - 1).clamp(min=0), device)
        return LLMInputs(
            embeds=source[_to_device(index, device)],
            attention=attention,
            positions=positions,
            keep=_to_device(kept, device),
            kept_labels=_to_device(next_labels[:, kept], device),
            num_targets=sum(map(len, t_ids)),
        )

    def _training_sequence(
        self, audio_embeds: torch.Tensor, audio_mask: torch.Tensor, prompts: list[str], targets: list[str]
    ) -> LLMInputs:
        """The LLM inputs of a training batch in the model's layout."""
        p_ids, t_ids = prompt_ids(self.tokenizer, prompts), target_ids(self.tokenizer, targets)
        block = self.audio_layout == "official" and not self.prompt_before_audio
        return self._sequence(audio_embeds, audio_mask, p_ids, t_ids, block=block)

    # -- training and generation ------------------------------------------------------------
    def forward(
        self,
        audio: torch.Tensor | None,
        audio_mask: torch.Tensor | None,
        prompts: list[str],
        targets: list[str],
        tasks: list[str] | None = None,
        streams: list[Stream | None] | None = None,
        clips: list[ClipRef | None] | None = None,
    ) -> LALMOutput:
        """Next-token loss on target tokens (+EOS) only. ``streams`` (the output of :meth:`encode`,
        e.g. from a cache) skip the frozen encoders; ``tasks`` name each row's task; ``clips``
        names each row's audio for the feature cache (None: not cacheable)."""
        if streams is None:
            streams = self.encode(audio, audio_mask, clips)
        audio_embeds, embed_mask, aux = self.embed_audio(streams, audio, audio_mask, self._context(prompts, tasks))
        inputs = self._training_sequence(audio_embeds, embed_mask, prompts, targets)
        # The vocabulary projection runs only on the positions followed by a target token (the
        # loss is the same mean over targets).
        logits = self.llm(
            inputs_embeds=inputs.embeds,
            attention_mask=inputs.attention,
            position_ids=inputs.positions,
            logits_to_keep=inputs.keep,
        ).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), inputs.kept_labels.reshape(-1), ignore_index=-100
        )
        return LALMOutput(lm_loss=loss, aux_losses=aux, num_target_tokens=inputs.num_targets)

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
        ids = prompt_ids(self.tokenizer, prompts)
        inputs = self._sequence(audio_embeds, embed_mask, ids, [[] for _ in ids], block=False, left=True)
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
            inputs_embeds=inputs.embeds, attention_mask=inputs.attention, logits_processor=processors, **kwargs
        )
        return [t.strip() for t in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changes: the parameters that train (projector, LoRA, trainable front-end
        parts) and every persistent buffer. A buffer can move without a gradient: a frozen encoder
        that runs in train mode, as officially, updates its BatchNorm running statistics every step
        (Dasheng's front end), and evaluation reads them. Saving only parameters would evaluate a
        reloaded or resumed model on the pretrained statistics instead. Buffers are small (the
        LLM's and Whisper's are non-persistent or absent)."""
        state = {name: p.detach().cpu() for name, p in self.named_parameters() if p.requires_grad}
        state.update((name, b.detach().cpu()) for name, b in persistent_buffers(self))
        return state
