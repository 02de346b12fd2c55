"""Dasheng checkpoints: the official layouts, reading them (with their strict-key errors) and
building a :class:`~.dasheng_model.DashengModel` from them.

Weights load strictly from both official layouts, without remote code:

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

from ..constants import SAMPLE_RATE
from .contract import EncoderContractError
from .dasheng_frontend import DashengFrontEnd
from .dasheng_model import DashengConfig, DashengModel, make_front_end

# (embed_dim, depth, num_heads) of the released models, as the package's dasheng_base/06B/12B set them.
SIZES = {"base": (768, 12, 12), "0.6B": (1280, 32, 16), "1.2B": (1536, 40, 24)}
HUB_IDS = {"base": "mispeech/dasheng-base", "0.6B": "mispeech/dasheng-0.6B", "1.2B": "mispeech/dasheng-1.2B"}

LAYOUTS = {
    "release": "a torch file {'model': the encoder's state dict (keys like 'blocks.0.attn.qkv.weight'), "
    "'config': its constructor kwargs}",
    "hub": "config.json with 'encoder_kwargs', and model.safetensors or pytorch_model.bin whose keys are "
    "'encoder.' + the encoder's keys (like 'encoder.blocks.0.attn.qkv.weight')",
}
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# preprocessor_config.json field -> DashengConfig field (the hub feature extractor's arguments).
PREPROCESSOR_FIELDS = {
    "feature_size": "n_mels",
    "n_fft": "n_fft",
    "win_size": "win_size",
    "hop_size": "hop_size",
    "f_min": "f_min",
    "f_max": "f_max",
    "center": "center",
}
# The weights-file suffixes that mark a source as a local path even when it looks like owner/name.
FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class DashengCheckpointError(EncoderContractError):
    """A Dasheng checkpoint that is missing, unreadable or not in an official layout."""


def _config(kwargs: dict[str, Any], source: str, size: str | None) -> DashengConfig:
    """DashengConfig from a checkpoint's kwargs (unknown keys ignored, as the Dasheng constructors
    do). A named size sets embed_dim/depth/num_heads as the package's dasheng_base/06B/12B do,
    after checking that the checkpoint does not say otherwise."""
    if kwargs.get("pooling", "mean") != "mean":
        raise DashengCheckpointError(
            f"{source}: pooling={kwargs['pooling']!r}; only the released models' "
            f"'mean' pooling (no class token) is supported."
        )
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
            raise DashengCheckpointError(
                f"{source}: holds a Dasheng with {clash}, not Dasheng-{size} {expected}. "
                f"Fix: use the encoder of its size (dasheng-base, dasheng-0.6b, "
                f"dasheng-1.2b) or the generic 'dasheng'."
            )
        values.update(expected)
    else:
        missing = [k for k in ("embed_dim", "depth") if k not in values]
        if missing:
            raise DashengCheckpointError(
                f"{source}: its config gives no {missing}. Fix: load it with "
                f"dasheng-base, dasheng-0.6b or dasheng-1.2b, which know their sizes."
            )
        if "num_heads" not in values:  # the weights do not show the head count; the released sizes do
            heads = {dim: h for dim, _, h in SIZES.values()}
            if values["embed_dim"] not in heads:
                raise DashengCheckpointError(
                    f"{source}: its config gives no num_heads and embed_dim "
                    f"{values['embed_dim']} is not a released size."
                )
            values["num_heads"] = heads[values["embed_dim"]]
    try:
        return DashengConfig(**values)
    except ValueError as err:
        raise DashengCheckpointError(f"{source}: {err}") from err


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
        raise OSError(
            f"'{source}': {filename} is not in the local Hugging Face cache and the hub could not be reached"
        ) from fetch.unreachable
    raise DashengCheckpointError(
        f"{source}: has no {filename}, so it is not a Dasheng checkpoint in the hub layout ({LAYOUTS['hub']})."
    )


def _load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _read_hub(fetch: _LocalDir | _HubRepo, source: str, size: str | None) -> DashengCheckpoint:
    raw = json.loads(_required(fetch, "config.json", source).read_text())
    kwargs = raw.get("encoder_kwargs")
    if not isinstance(kwargs, dict):
        raise DashengCheckpointError(
            f"{source}: config.json has no 'encoder_kwargs', so it is not a Dasheng "
            f"checkpoint in the hub layout ({LAYOUTS['hub']})."
        )
    kwargs = dict(kwargs)
    named = {f"dasheng-{s}": s for s in SIZES}.get(raw.get("name", ""))
    if named is not None:  # the hub config derives the sizes from its name
        for key, value in zip(("embed_dim", "depth", "num_heads"), SIZES[named]):
            kwargs.setdefault(key, value)
    preprocessor = fetch("preprocessor_config.json")
    if preprocessor is not None:
        extractor = json.loads(preprocessor.read_text())
        if extractor.get("sampling_rate", SAMPLE_RATE) != SAMPLE_RATE:
            raise DashengCheckpointError(
                f"{source}: its feature extractor expects {extractor['sampling_rate']} Hz "
                f"audio; the encoders here take {SAMPLE_RATE} Hz."
            )
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
        return DashengCheckpoint(config, {k[len("encoder.") :]: v for k, v in weights.items()}, "hub", source)
    if fetch.unreachable is not None:
        raise OSError(
            f"'{source}': its weights are not in the local Hugging Face cache and the hub could not be reached"
        ) from fetch.unreachable
    raise DashengCheckpointError(f"{source}: has none of {', '.join(WEIGHT_FILES)} ({LAYOUTS['hub']}).")


def _read_release(path: Path, size: str | None) -> DashengCheckpoint:
    source = str(path)
    try:
        dump = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise DashengCheckpointError(
            f"{source}: cannot be read as a Dasheng release checkpoint "
            f"({LAYOUTS['release']}): {type(err).__name__}: {err}"
        ) from err
    if not (isinstance(dump, dict) and isinstance(dump.get("model"), dict) and isinstance(dump.get("config"), dict)):
        found = sorted(dump)[:5] if isinstance(dump, dict) else type(dump).__name__
        raise DashengCheckpointError(
            f"{source}: not a Dasheng release checkpoint: expected {LAYOUTS['release']}; found {found}."
        )
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
                f"f_max {config.f_max}): the checkpoint was made with another mel front end."
            )


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
    raise DashengCheckpointError(
        f"{source!r}: no such file or directory, and not a hub id (owner/name). Fix: "
        f"pass a release file ({LAYOUTS['release']}), a directory with the hub files, "
        f"or a hub id such as {HUB_IDS['base']!r}."
    )


def _mismatch_message(source: str, layout: str, missing: list[str], unexpected: list[str]) -> str:
    def first(keys: list[str]) -> str:
        return f"{len(keys)} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})" if keys else "none"

    return (
        f"{source}: does not match the Dasheng {layout} layout ({LAYOUTS[layout]}): missing keys {first(missing)}; "
        f"unexpected keys {first(unexpected)}. Fix: pass an official Dasheng checkpoint of this layout."
    )


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
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise DashengCheckpointError(
            f"{checkpoint.source}: keys of another shape than its config "
            f"({checkpoint.config.embed_dim}-d, {checkpoint.config.depth} layers) "
            f"implies: {', '.join(wrong[:5])}."
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model


def load_dasheng(source: str, size: str | None = None) -> tuple[DashengModel, DashengFrontEnd]:
    """Model and front end from a release file, hub-layout directory or hub id (see :func:`read_checkpoint`)."""
    checkpoint = read_checkpoint(source, size)
    model = build_model(checkpoint)
    if checkpoint.layout == "hub":
        _draw_as_hub_init(checkpoint.config)
    return model, make_front_end(checkpoint.config)
