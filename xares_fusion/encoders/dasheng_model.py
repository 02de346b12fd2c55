"""The Dasheng transformer body, in plain torch: :class:`DashengConfig`, the blocks and
:class:`DashengModel`, and :func:`make_front_end` (the front end a config asks for).

25 frames/s: a frame is one 64 x 4 patch of the mel spectrogram (4 hops of 160 samples, 40 ms),
so a clip of n samples has n // 640 valid frames. The transformer sees at most 1008 mel frames
(252 frames, 10.08 s) at a time: longer inputs are cut into chunks, encoded separately and
concatenated.

This is the model code of the ``dasheng`` package and of the hub checkpoints' remote code written
without torchaudio (which does not install beside our torch) and einops; the front end is in
``dasheng_frontend.py``, checkpoint loading in ``dasheng_checkpoints.py`` and the registered
encoder in ``dasheng.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .dasheng_frontend import DashengFrontEnd
from .masking import lengths_to_mask

CHUNKINGS = ("hub", "package")


@dataclass(frozen=True)
class DashengConfig:
    """The architecture and front-end arguments of a Dasheng encoder (the package's names)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    init_values: float | None = None  # LayerScale, off in the released models
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    target_length: int = 1008  # mel frames per chunk
    patch_size: tuple[int, int] = (64, 4)
    patch_stride: tuple[int, int] = (64, 4)
    n_mels: int = 64
    n_fft: int = 512
    win_size: int = 512
    hop_size: int = 160
    f_min: float = 0.0
    f_max: float | None = 8000.0
    center: bool = True
    top_db: float | None = 120.0

    def __post_init__(self) -> None:
        if tuple(self.patch_size) != tuple(self.patch_stride):
            raise ValueError(
                f"Dasheng patches do not overlap: patch_size {self.patch_size} must equal "
                f"patch_stride {self.patch_stride}"
            )
        if self.n_mels != self.patch_size[0]:
            raise ValueError(f"a Dasheng patch spans all {self.n_mels} mel bins; patch_size[0] is {self.patch_size[0]}")
        if self.target_length % self.patch_size[1]:
            raise ValueError(f"target_length {self.target_length} is not a multiple of the patch width")

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per output frame (640: 4 hops of 160)."""
        return self.hop_size * self.patch_stride[1]


# --- the model -----------------------------------------------------------------------------------


class _SwapAxes12(nn.Module):
    """[b, c, f, t] <-> [b, f, c, t], around the BatchNorm over mel bins (the Dasheng code's rearranges)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class _PatchEmbed(nn.Module):
    """Non-overlapping 64 x 4 patches of the [B, 1, n_mels, T] spectrogram -> [B, D, 1, T // 4]."""

    def __init__(self, config: DashengConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class _LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Attention(nn.Module):
    def __init__(self, config: DashengConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        if dim % config.num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {config.num_heads}")
        self.num_heads, self.attn_drop = config.num_heads, config.attn_drop_rate
        self.qkv = nn.Linear(dim, dim * 3, bias=config.qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(config.drop_rate)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if key_valid is None else key_valid[:, None, None, :]
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class _Mlp(nn.Module):
    def __init__(self, config: DashengConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.embed_dim, int(config.embed_dim * config.mlp_ratio))
        self.act = nn.GELU()
        self.fc2 = nn.Linear(int(config.embed_dim * config.mlp_ratio), config.embed_dim)
        self.drop = nn.Dropout(config.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class _Block(nn.Module):
    def __init__(self, config: DashengConfig) -> None:
        super().__init__()
        dim, scale = config.embed_dim, config.init_values
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(config)
        self.ls1 = _LayerScale(dim, scale) if scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(config)
        self.ls2 = _LayerScale(dim, scale) if scale else nn.Identity()

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), key_valid))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DashengModel(nn.Module):
    """The Dasheng encoder after the dB mel front end: BatchNorm over mel bins, 64 x 4 patches,
    time and frequency position embeddings, pre-norm transformer blocks, final LayerNorm.

    Its state dict has the package's key names (``init_bn.1.*``, ``patch_embed.proj.*``,
    ``time_pos_embed``, ``freq_pos_embed``, ``blocks.N.*``, ``norm.*``). Built with random values
    (tests); the released weights come through :func:`load_dasheng`.
    """

    def __init__(self, config: DashengConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.init_bn = nn.Sequential(_SwapAxes12(), nn.BatchNorm2d(config.n_mels, momentum=0.01), _SwapAxes12())
        self.patch_embed = _PatchEmbed(config)
        grid_f, grid_t = config.n_mels // config.patch_stride[0], config.target_length // config.patch_stride[1]
        self.time_pos_embed = nn.Parameter(torch.randn(1, dim, 1, grid_t) * 0.02)
        self.freq_pos_embed = nn.Parameter(torch.randn(1, dim, grid_f, 1) * 0.02)
        self.pos_drop = nn.Dropout(config.drop_rate)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    @property
    def frames_per_chunk(self) -> int:
        return self.config.target_length // self.config.patch_stride[1]

    def forward(
        self,
        spectrogram: torch.Tensor,
        valid_frames: torch.Tensor | None = None,
        chunking: str = "hub",
        output_hidden_states: bool = False,
    ) -> list[torch.Tensor]:
        """Encode a dB mel spectrogram [B, n_mels, T] (from :class:`DashengFrontEnd`).

        Args:
            valid_frames: [B] frames per clip; keys beyond are masked out of attention within
                each chunk (the package's ``x_length``). Needs ``chunking="package"``.
            chunking: ``"hub"``: as the hub checkpoints' model code (see :meth:`_hub_chunks`);
                ``"package"``: as the ``dasheng`` package, each clip's chunks in order, the last
                one encoded at its own length.
            output_hidden_states: return every layer's output, not only the last.

        Returns:
            [B, frames, D] tensors: the output; or, with ``output_hidden_states``, the embeddings,
            then each block's output, the last one layer-normed (as transformers' hidden_states).
        """
        if chunking not in CHUNKINGS:
            raise ValueError(f"chunking must be one of {CHUNKINGS}; got {chunking!r}")
        if valid_frames is not None and chunking != "package":
            raise ValueError("valid_frames (masked attention) needs chunking='package'")
        with torch.autocast(device_type=spectrogram.device.type, enabled=False):  # BatchNorm in fp32
            x = self.init_bn(spectrogram.float()[:, None])
        batch = x.shape[0]
        if chunking == "hub":
            chunks, keep = self._hub_chunks(x)
            states = self._encode(self.patch_embed(chunks), None, output_hidden_states)
            # The hub code's reshape of its chunk-major batch: for B > 1 clips longer than one
            # chunk it interleaves the clips (clip 0 gets chunk 0 of clips 0 and 1, ...). Official bug, kept.
            return [s.reshape(batch, -1, s.shape[-1])[:, :keep] for s in states]
        patches = self.patch_embed(x)
        total, per = patches.shape[-1], self.frames_per_chunk
        key_valid = None if valid_frames is None else lengths_to_mask(valid_frames, total).bool()
        full = total - total % per
        pieces = []
        if full:  # the full chunks of every clip in one batch, chunk-major, then back in clip order
            n = full // per
            mask = None if key_valid is None else torch.cat(key_valid[:, :full].split(per, -1))
            states = self._encode(torch.cat(patches[..., :full].split(per, -1)), mask, output_hidden_states)
            pieces.append([s.reshape(n, batch, per, -1).transpose(0, 1).reshape(batch, full, -1) for s in states])
        if full < total:
            mask = None if key_valid is None else key_valid[:, full:]
            pieces.append(self._encode(patches[..., full:], mask, output_hidden_states))
        return [torch.cat(parts, 1) for parts in zip(*pieces)]

    def _hub_chunks(self, x: torch.Tensor) -> tuple[torch.Tensor, int | None]:
        """The hub model code's chunks of a normalised [B, 1, n_mels, T] spectrogram: up to
        ``target_length`` frames, one chunk as is; beyond, the last partial chunk zero-padded to
        ``target_length`` frames (its output is cut back to T // 4 frames afterwards), and a last
        chunk of exactly ``target_length`` frames dropped (official bug, kept). Returns the
        chunks stacked chunk-major on the batch axis and the frames to keep (None: all)."""
        frames, length = x.shape[-1], self.config.target_length
        if frames <= length:
            return x, None
        whole, rest = divmod(frames, length)
        if rest:
            x, keep = F.pad(x, (0, length - rest)), frames // self.config.patch_stride[1]
        else:
            x, keep = x[..., : (whole - 1) * length], None
        return torch.cat(x.split(length, -1)), keep

    def _encode(self, patches: torch.Tensor, key_valid: torch.Tensor | None, all_states: bool) -> list[torch.Tensor]:
        """One chunk per batch row: patches [N, D, 1, t] (t <= 252) -> [N, t, D] (every layer's if asked)."""
        t = patches.shape[-1]
        x = patches + self.time_pos_embed[..., :t] + self.freq_pos_embed
        x = self.pos_drop(x.flatten(2).transpose(1, 2))  # "b c f t -> b (f t) c" of the Dasheng code
        if key_valid is not None:
            # A chunk that is all padding for a clip leaves its rows no key (NaN in attention);
            # let them attend everywhere: finite values, in frames the encoder zeroes.
            key_valid = key_valid | ~key_valid.any(-1, keepdim=True)
        states = [x] if all_states else []
        for block in self.blocks:
            x = block(x, key_valid)
            if all_states:
                states.append(x)
        x = self.norm(x)
        return states[:-1] + [x] if all_states else [x]


def make_front_end(config: DashengConfig) -> DashengFrontEnd:
    """The dB mel front end a checkpoint's config asks for."""
    return DashengFrontEnd(
        n_mels=config.n_mels,
        n_fft=config.n_fft,
        win_size=config.win_size,
        hop_size=config.hop_size,
        f_min=config.f_min,
        f_max=config.f_max,
        center=config.center,
        top_db=config.top_db,
    )
