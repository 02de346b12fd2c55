"""Dasheng (Deep Audio-Signal Holistic Embeddings), a masked-audio-modelling transformer, in plain torch.

25 frames/s: a frame is one 64 x 4 patch of the mel spectrogram (4 hops of 160 samples, 40 ms),
so a clip of n samples has n // 640 valid frames. The transformer sees at most 1008 mel frames
(252 frames, 10.08 s) at a time: longer inputs are cut into chunks, encoded separately and
concatenated.

This is the model code of the ``dasheng`` package and of the hub checkpoints' remote code written
without torchaudio (which does not install beside our torch) and einops; the front end is in
``dasheng_frontend.py``. Weights load strictly from both official layouts, without remote code:

* release file: a torch file ``{"model": encoder state dict, "config": encoder kwargs}``, as the
  package's ``Dasheng.from_pretrained`` reads it (its front end's fixed buffers, when present, are
  compared with ours);
* hub layout (``mispeech/dasheng-base``, ``mispeech/dasheng-0.6B``, ``mispeech/dasheng-1.2B``, or
  a local directory with their files): ``config.json`` with ``encoder_kwargs`` (and ``name``),
  optional ``preprocessor_config.json``, and ``model.safetensors`` or ``pytorch_model.bin``
  (or a sharded index of either) whose keys are ``"encoder." +`` the encoder's keys.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_encoder
from .contract import EncoderContractError
from .dasheng_frontend import SAMPLE_RATE, DashengFrontEnd
from .masking import lengths_to_mask, sample_lengths

# (embed_dim, depth, num_heads) of the released models, as the package's dasheng_base/06B/12B set them.
SIZES = {"base": (768, 12, 12), "0.6B": (1280, 32, 16), "1.2B": (1536, 40, 24)}
HUB_IDS = {"base": "mispeech/dasheng-base", "0.6B": "mispeech/dasheng-0.6B", "1.2B": "mispeech/dasheng-1.2B"}
MODES = ("official-example", "package", "masked")
CHUNKINGS = ("hub", "package")

LAYOUTS = {
    "release": "a torch file {'model': the encoder's state dict (keys like 'blocks.0.attn.qkv.weight'), "
               "'config': its constructor kwargs}",
    "hub": "config.json with 'encoder_kwargs', and model.safetensors or pytorch_model.bin whose keys are "
           "'encoder.' + the encoder's keys (like 'encoder.blocks.0.attn.qkv.weight')",
}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# preprocessor_config.json field -> DashengConfig field (the hub feature extractor's arguments).
PREPROCESSOR_FIELDS = {"feature_size": "n_mels", "n_fft": "n_fft", "win_size": "win_size", "hop_size": "hop_size",
                       "f_min": "f_min", "f_max": "f_max", "center": "center"}
# The weights-file suffixes that mark a source as a local path even when it looks like owner/name.
FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class DashengCheckpointError(EncoderContractError):
    """A Dasheng checkpoint that is missing, unreadable or not in an official layout."""


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
            raise ValueError(f"Dasheng patches do not overlap: patch_size {self.patch_size} must equal "
                             f"patch_stride {self.patch_stride}")
        if self.n_mels != self.patch_size[0]:
            raise ValueError(f"a Dasheng patch spans all {self.n_mels} mel bins; patch_size[0] is {self.patch_size[0]}")
        if self.target_length % self.patch_size[1]:
            raise ValueError(f"target_length {self.target_length} is not a multiple of the patch width")

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per output frame (640: 4 hops of 160)."""
        return self.hop_size * self.patch_stride[1]


def _config(kwargs: dict[str, Any], source: str, size: str | None) -> DashengConfig:
    """DashengConfig from a checkpoint's kwargs (unknown keys ignored, as the Dasheng constructors
    do). A named size sets embed_dim/depth/num_heads as the package's dasheng_base/06B/12B do,
    after checking that the checkpoint does not say otherwise."""
    if kwargs.get("pooling", "mean") != "mean":
        raise DashengCheckpointError(f"{source}: pooling={kwargs['pooling']!r}; only the released models' "
                                     f"'mean' pooling (no class token) is supported.")
    known = {f.name for f in fields(DashengConfig)}
    values = {k: v for k, v in kwargs.items() if k in known}
    for key in ("patch_size", "patch_stride"):
        if key in values:
            values[key] = tuple(values[key]) if isinstance(values[key], (list, tuple)) else (values[key],) * 2
    dims = ("embed_dim", "depth", "num_heads")
    if size is not None:
        expected = dict(zip(dims, SIZES[size]))
        clash = {k: values[k] for k in dims if k in values and values[k] != expected[k]}
        if clash:
            raise DashengCheckpointError(f"{source}: holds a Dasheng with {clash}, not Dasheng-{size} {expected}. "
                                         f"Fix: use the encoder of its size (dasheng-base, dasheng-0.6b, "
                                         f"dasheng-1.2b) or the generic 'dasheng'.")
        values.update(expected)
    else:
        missing = [k for k in ("embed_dim", "depth") if k not in values]
        if missing:
            raise DashengCheckpointError(f"{source}: its config gives no {missing}. Fix: load it with "
                                         f"dasheng-base, dasheng-0.6b or dasheng-1.2b, which know their sizes.")
        if "num_heads" not in values:  # the weights do not show the head count; the released sizes do
            heads = {dim: h for dim, _, h in SIZES.values()}
            if values["embed_dim"] not in heads:
                raise DashengCheckpointError(f"{source}: its config gives no num_heads and embed_dim "
                                             f"{values['embed_dim']} is not a released size.")
            values["num_heads"] = heads[values["embed_dim"]]
    try:
        return DashengConfig(**values)
    except ValueError as err:
        raise DashengCheckpointError(f"{source}: {err}") from err


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
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.attn_drop if self.training else 0.0)
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

    def forward(self, spectrogram: torch.Tensor, valid_frames: torch.Tensor | None = None, chunking: str = "hub",
                output_hidden_states: bool = False) -> list[torch.Tensor]:
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
    return DashengFrontEnd(n_mels=config.n_mels, n_fft=config.n_fft, win_size=config.win_size,
                           hop_size=config.hop_size, f_min=config.f_min, f_max=config.f_max,
                           center=config.center, top_db=config.top_db)


# --- checkpoints ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DashengCheckpoint:
    """A checkpoint read from disk or the hub: config, state dict in our key names, layout, origin."""

    config: DashengConfig
    state_dict: dict[str, torch.Tensor]
    layout: str  # "release" or "hub"
    source: str


class _LocalDir:
    """Files of a hub-layout directory (``None`` for a file it lacks)."""

    unreachable: OSError | None = None

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, filename: str) -> Path | None:
        path = self.root / filename
        return path if path.is_file() else None


class _HubRepo:
    """Files of a hub repository through the Hugging Face cache (``None`` for a file it lacks);
    remembers when a file was neither cached nor reachable (offline)."""

    def __init__(self, repo_id: str) -> None:
        self.repo_id = repo_id
        self.unreachable: OSError | None = None

    def __call__(self, filename: str) -> Path | None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            return Path(hf_hub_download(self.repo_id, filename))
        except LocalEntryNotFoundError as err:  # a subclass of EntryNotFoundError: caught first
            self.unreachable = err
            return None
        except EntryNotFoundError:
            return None
        except OSError as err:  # no such repository, no access, no network: name the repository first
            raise OSError(f"'{self.repo_id}': {err}") from err


def _required(fetch: _LocalDir | _HubRepo, filename: str, source: str) -> Path:
    path = fetch(filename)
    if path is not None:
        return path
    if fetch.unreachable is not None:  # an OSError: build_encoder turns it into its one-line message
        raise OSError(f"'{source}': {filename} is not in the local Hugging Face cache and the hub "
                      f"could not be reached") from fetch.unreachable
    raise DashengCheckpointError(f"{source}: has no {filename}, so it is not a Dasheng checkpoint in the hub "
                                 f"layout ({LAYOUTS['hub']}).")


def _load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _read_hub(fetch: _LocalDir | _HubRepo, source: str, size: str | None) -> DashengCheckpoint:
    raw = json.loads(_required(fetch, "config.json", source).read_text())
    kwargs = raw.get("encoder_kwargs")
    if not isinstance(kwargs, dict):
        raise DashengCheckpointError(f"{source}: config.json has no 'encoder_kwargs', so it is not a Dasheng "
                                     f"checkpoint in the hub layout ({LAYOUTS['hub']}).")
    kwargs = dict(kwargs)
    named = {f"dasheng-{s}": s for s in SIZES}.get(raw.get("name", ""))
    if named is not None:  # the hub config derives the sizes from its name
        for key, value in zip(("embed_dim", "depth", "num_heads"), SIZES[named]):
            kwargs.setdefault(key, value)
    preprocessor = fetch("preprocessor_config.json")
    if preprocessor is not None:
        extractor = json.loads(preprocessor.read_text())
        if extractor.get("sampling_rate", SAMPLE_RATE) != SAMPLE_RATE:
            raise DashengCheckpointError(f"{source}: its feature extractor expects {extractor['sampling_rate']} Hz "
                                         f"audio; the encoders here take {SAMPLE_RATE} Hz.")
        kwargs.update({ours: extractor[theirs] for theirs, ours in PREPROCESSOR_FIELDS.items() if theirs in extractor})
    config = _config(kwargs, source, size)

    for name in WEIGHT_FILES:
        found = fetch(name)
        if found is None:
            continue
        files = [found]
        if name.endswith(".index.json"):
            shards = sorted(set(json.loads(found.read_text())["weight_map"].values()))
            files = [_required(fetch, shard, source) for shard in shards]
        weights: dict[str, torch.Tensor] = {}
        for path in files:
            weights.update(_load_weights_file(path))
        stray = sorted(k for k in weights if not k.startswith("encoder."))
        if stray:
            raise DashengCheckpointError(_mismatch_message(source, "hub", [], stray))
        return DashengCheckpoint(config, {k[len("encoder."):]: v for k, v in weights.items()}, "hub", source)
    if fetch.unreachable is not None:
        raise OSError(f"'{source}': its weights are not in the local Hugging Face cache and the hub could not "
                      f"be reached") from fetch.unreachable
    raise DashengCheckpointError(f"{source}: has none of {', '.join(WEIGHT_FILES)} ({LAYOUTS['hub']}).")


def _read_release(path: Path, size: str | None) -> DashengCheckpoint:
    source = str(path)
    try:
        dump = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise DashengCheckpointError(f"{source}: cannot be read as a Dasheng release checkpoint "
                                     f"({LAYOUTS['release']}): {type(err).__name__}: {err}") from err
    if not (isinstance(dump, dict) and isinstance(dump.get("model"), dict) and isinstance(dump.get("config"), dict)):
        found = sorted(dump)[:5] if isinstance(dump, dict) else type(dump).__name__
        raise DashengCheckpointError(f"{source}: not a Dasheng release checkpoint: expected {LAYOUTS['release']}; "
                                     f"found {found}.")
    config = _config(dump["config"], source, size)
    state = dict(dump["model"])
    front = {k: state.pop(k) for k in list(state) if k.startswith("front_end.")}
    _check_front_end(front, config, source)
    return DashengCheckpoint(config, state, "release", source)


def _check_front_end(buffers: dict[str, torch.Tensor], config: DashengConfig, source: str) -> None:
    """A release file keeps torchaudio's fixed front-end buffers (Hann window, mel filters): they
    carry nothing learned, but must be what our front end computes, or the file was made with
    another front end."""
    front = make_front_end(config)
    ours = {"front_end.0.spectrogram.window": front.window, "front_end.0.mel_scale.fb": front.mel_fb}
    unexpected = sorted(set(buffers) - set(ours))
    if unexpected:
        raise DashengCheckpointError(_mismatch_message(source, "release", [], unexpected))
    for key, value in buffers.items():
        if value.shape != ours[key].shape or not torch.allclose(value.float(), ours[key], rtol=0, atol=1e-4):
            raise DashengCheckpointError(
                f"{source}: its front-end buffer {key} {tuple(value.shape)} differs from the one this encoder "
                f"computes {tuple(ours[key].shape)} for its config (n_mels {config.n_mels}, n_fft {config.n_fft}, "
                f"f_max {config.f_max}): the checkpoint was made with another mel front end.")


def read_checkpoint(source: str, size: str | None = None) -> DashengCheckpoint:
    """Read a Dasheng checkpoint: a release file, a hub-layout directory, or a hub id (through the
    Hugging Face cache, downloading when the hub is reachable). ``size`` ('base', '0.6B', '1.2B')
    fixes the expected dimensions."""
    path = Path(source).expanduser()
    if path.is_file():
        return _read_release(path, size)
    if path.is_dir():
        return _read_hub(_LocalDir(path), source, size)
    if HUB_ID.fullmatch(source) and not source.endswith(FILE_SUFFIXES):
        return _read_hub(_HubRepo(source), source, size)
    raise DashengCheckpointError(f"{source!r}: no such file or directory, and not a hub id (owner/name). Fix: "
                                 f"pass a release file ({LAYOUTS['release']}), a directory with the hub files, "
                                 f"or a hub id such as {HUB_IDS['base']!r}.")


def _mismatch_message(source: str, layout: str, missing: list[str], unexpected: list[str]) -> str:
    def first(keys: list[str]) -> str:
        return f"{len(keys)} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})" if keys else "none"
    return (f"{source}: does not match the Dasheng {layout} layout ({LAYOUTS[layout]}): missing keys {first(missing)}; "
            f"unexpected keys {first(unexpected)}. Fix: pass an official Dasheng checkpoint of this layout.")


def _draw_as_hub_init(config: DashengConfig) -> None:
    """Advance the global generator as building the hub model does. Under transformers'
    from_pretrained (4.57, the official pin) init functions are no-ops and parameters are moved to
    the meta device only after creation, so the two ``torch.randn`` position embeddings are still
    drawn; the official pipeline then initialises LoRA and the projector from what follows."""
    torch.randn(1, config.embed_dim, 1, config.target_length // config.patch_stride[1])
    torch.randn(1, config.embed_dim, config.n_mels // config.patch_stride[0], 1)


def build_model(checkpoint: DashengCheckpoint) -> DashengModel:
    """A :class:`DashengModel` holding the checkpoint's weights (in fp32), loaded strictly: any
    missing, unexpected or differently shaped key raises :class:`DashengCheckpointError`."""
    with torch.device("meta"):  # no random initialisation: every value comes from the checkpoint
        model = DashengModel(checkpoint.config)
    expected = model.state_dict()
    state = {k: v.float() if v.is_floating_point() else v for k, v in checkpoint.state_dict.items()}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise DashengCheckpointError(_mismatch_message(checkpoint.source, checkpoint.layout, missing, unexpected))
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if state[k].shape != v.shape]
    if wrong:
        raise DashengCheckpointError(f"{checkpoint.source}: keys of another shape than its config "
                                     f"({checkpoint.config.embed_dim}-d, {checkpoint.config.depth} layers) "
                                     f"implies: {', '.join(wrong[:5])}.")
    model.load_state_dict(state, strict=True, assign=True)
    return model


def load_dasheng(source: str, size: str | None = None) -> tuple[DashengModel, DashengFrontEnd]:
    """Model and front end from a release file, hub-layout directory or hub id (see :func:`read_checkpoint`)."""
    checkpoint = read_checkpoint(source, size)
    model = build_model(checkpoint)
    if checkpoint.layout == "hub":
        _draw_as_hub_init(checkpoint.config)
    return model, make_front_end(checkpoint.config)


# --- the encoder ---------------------------------------------------------------------------------


@register_encoder("dasheng")
class DashengEncoder(nn.Module):
    """Dasheng features at 25 frames/s.

    Args:
        model_name: hub id (default ``mispeech/dasheng-base``, as the official example) or a local
            directory with the hub files; loaded into this module's own code (no remote code).
        checkpoint: instead, a release file (``{"model", "config"}`` torch file) or hub directory.
        mode: how a padded batch is encoded.

            * ``"official-example"`` (default): what the official XARES-LLM example encoder
              (``example/dasheng/dasheng_base.py``) computes with the hub model: no lengths reach
              the model and no mask comes back (the official model reads None as all frames
              valid), so the padding frames are attended to, their features reach the LLM, and a
              clip's features depend on its batch. Beyond 1008 mel frames (10.08 s of padded
              batch) the hub code zero-pads the last chunk, drops a last chunk that is exactly
              full, and, for batches of several clips, interleaves the clips' chunks (see
              :meth:`DashengModel.forward`); official bugs, kept.
            * ``"package"``: the ``dasheng`` package's ``Dasheng(x)``: no lengths either, but
              each clip's chunks in order, the last encoded at its own length.
            * ``"masked"``: the package's ``Dasheng(x, x_length)``: each clip's padding is masked
              out of attention (within each chunk), the returned mask has n // 640 frames per clip
              of n samples (at least 1), and padding frames are zeroed.

            In every mode the dB floor (top_db) is shared by the batch, as torchaudio computes it,
            and BatchNorm uses batch statistics when the encoder is in train mode.
        output_hidden_states: keep every layer's output in ``self.hidden_states`` (for fusions).
        size: ``"base"``, ``"0.6B"`` or ``"1.2B"``: the checkpoint must be of this size (set by
            the ``dasheng-base``/``-0.6b``/``-1.2b`` encoders).
    """

    def __init__(self, model_name: str = HUB_IDS["base"], checkpoint: str | None = None,
                 mode: str = "official-example", output_hidden_states: bool = False, size: str | None = None) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        if size is not None and size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}; got {size!r}")
        self.model, self.front_end = load_dasheng(checkpoint or model_name, size=size)
        config = self.model.config
        self.mode, self.output_hidden_states = mode, output_hidden_states
        self.output_dim = config.embed_dim
        self.samples_per_frame = config.samples_per_frame
        self.frame_rate = SAMPLE_RATE / self.samples_per_frame
        # The shortest input giving one frame (4 mel frames); centred frames also need more than
        # n_fft / 2 samples for the reflect padding.
        width = config.patch_stride[1] - 1
        self.min_samples = (max(width * config.hop_size, config.n_fft // 2 + 1) if config.center
                            else config.n_fft + width * config.hop_size)
        self.hidden_states: list[torch.Tensor] | None = None
        self.eval()  # as from_pretrained leaves a model

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if audio.shape[-1] < self.min_samples:
            raise ValueError(f"Dasheng needs at least {self.min_samples} samples (one 40 ms frame); "
                             f"got a batch of {audio.shape[-1]}")
        spectrogram = self.front_end(audio)
        if self.mode == "masked":
            frames = spectrogram.shape[-1] // self.model.config.patch_stride[1]
            valid = (sample_lengths(audio, audio_attention_mask) // self.samples_per_frame).clamp(1, frames)
            states = self.model(spectrogram, valid, "package", self.output_hidden_states)
            mask = lengths_to_mask(valid, frames)
            states = [s * mask[..., None].to(s.dtype) for s in states]
        else:
            chunking = "hub" if self.mode == "official-example" else "package"
            states = self.model(spectrogram, None, chunking, self.output_hidden_states)
            mask = torch.ones(states[-1].shape[:2], dtype=torch.long, device=audio.device)
        if self.output_hidden_states:
            self.hidden_states = states
        return states[-1], mask


@register_encoder("dasheng-base")
def dasheng_base(model_name: str = HUB_IDS["base"], **kwargs: Any) -> DashengEncoder:
    """Dasheng-Base: 768-d, 12 layers, 12 heads (``DashengEncoder`` arguments)."""
    return DashengEncoder(model_name=model_name, size="base", **kwargs)


@register_encoder("dasheng-0.6b")
def dasheng_06b(model_name: str = HUB_IDS["0.6B"], **kwargs: Any) -> DashengEncoder:
    """Dasheng-0.6B: 1280-d, 32 layers, 16 heads (``DashengEncoder`` arguments)."""
    return DashengEncoder(model_name=model_name, size="0.6B", **kwargs)


@register_encoder("dasheng-1.2b")
def dasheng_12b(model_name: str = HUB_IDS["1.2B"], **kwargs: Any) -> DashengEncoder:
    """Dasheng-1.2B: 1536-d, 40 layers, 24 heads (``DashengEncoder`` arguments)."""
    return DashengEncoder(model_name=model_name, size="1.2B", **kwargs)
