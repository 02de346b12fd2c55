"""Dasheng without torchaudio: the front end against the HTK formula and hand values, the body
against the official `dasheng` package (same random weights), the hub model code's chunking,
and strict loading of both official checkpoint layouts.

The package's model module imports ``torchaudio.transforms``, which does not install beside our
torch. To import it at all, a stand-in ``torchaudio.transforms`` (MelSpectrogram, AmplitudeToDB
written from torchaudio's algorithm) is put in ``sys.modules`` for the duration of that import
only. It proves nothing about torchaudio; the front end is proven by the formula and hand values.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers.audio_utils import mel_filter_bank

from xares_fusion.constants import SAMPLE_RATE
from xares_fusion.encoders import EncoderContractError, build_encoder, check_encoder
from xares_fusion.encoders.dasheng import (
    HUB_IDS,
    SIZES,
    DashengCheckpointError,
    DashengEncoder,
    build_model,
    load_dasheng,
    read_checkpoint,
)
from xares_fusion.encoders.dasheng_frontend import DashengFrontEnd, power_to_db

# The real front end and chunk settings, a small transformer.
TINY = dict(embed_dim=64, depth=2, num_heads=4, target_length=1008, patch_size=[64, 4], patch_stride=[64, 4])
SECONDS_25 = 400_000  # 25 s: 2501 mel frames -> 625 frames = 252 + 252 + a tail of 121


# --- the package, imported through a stand-in torchaudio ---------------------------------------


def _torchaudio_fbanks(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """torchaudio.functional.melscale_fbanks (HTK, no norm), in float32 as torchaudio computes it."""

    def hz_to_mel(f: float) -> float:
        return 2595.0 * math.log10(1.0 + f / 700.0)

    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    f_pts = 700.0 * (10 ** (torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2) / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down, up = -slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]
    return torch.max(torch.zeros(1), torch.min(down, up))


class _Spectrogram(nn.Module):
    def __init__(self, n_fft: int, win_length: int, hop_length: int, center: bool) -> None:
        super().__init__()
        self.n_fft, self.win_length, self.hop_length, self.center = n_fft, win_length, hop_length, center
        self.register_buffer("window", torch.hann_window(win_length))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        shape = waveform.shape
        spec = torch.stft(
            waveform.reshape(-1, shape[-1]),
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window,
            self.center,
            "reflect",
            False,
            True,
            return_complex=True,
        )
        return spec.reshape(shape[:-1] + spec.shape[-2:]).abs().pow(2.0)


class _MelScale(nn.Module):
    def __init__(self, fb: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("fb", fb)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)


class _MelSpectrogram(nn.Module):
    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        n_mels: int = 128,
        center: bool = True,
        **unused: Any,
    ) -> None:
        super().__init__()
        win_length = win_length or n_fft
        self.spectrogram = _Spectrogram(n_fft, win_length, hop_length or win_length // 2, center)
        self.mel_scale = _MelScale(
            _torchaudio_fbanks(n_fft // 2 + 1, f_min, f_max or sample_rate // 2, n_mels, sample_rate)
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.mel_scale(self.spectrogram(waveform))


class _AmplitudeToDB(nn.Module):
    """torchaudio.functional.amplitude_to_DB's steps, reshape to (-1, channels, freq, time) included."""

    def __init__(self, stype: str = "power", top_db: float | None = None) -> None:
        super().__init__()
        self.multiplier, self.amin, self.top_db = 10.0 if stype == "power" else 20.0, 1e-10, top_db
        self.db_multiplier = math.log10(max(self.amin, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_db = self.multiplier * torch.log10(torch.clamp(x, min=self.amin)) - self.multiplier * self.db_multiplier
        if self.top_db is not None:
            shape = x_db.size()
            x_db = x_db.reshape(-1, shape[-3] if x_db.dim() > 2 else 1, shape[-2], shape[-1])
            x_db = torch.max(x_db, (x_db.amax(dim=(-3, -2, -1)) - self.top_db).view(-1, 1, 1, 1)).reshape(shape)
        return x_db


@pytest.fixture(scope="module")
def package_dasheng() -> type:
    """The package's ``Dasheng`` class (the stand-in torchaudio is in sys.modules only while it imports:
    transformers probes for torchaudio and fails on a module without a spec)."""
    fake, transforms = types.ModuleType("torchaudio"), types.ModuleType("torchaudio.transforms")
    transforms.MelSpectrogram, transforms.AmplitudeToDB = _MelSpectrogram, _AmplitudeToDB
    fake.transforms = transforms
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "torchaudio", fake)
        patch.setitem(sys.modules, "torchaudio.transforms", transforms)
        from dasheng.pretrained.pretrained import Dasheng
    return Dasheng


@pytest.fixture(scope="module")
def reference(package_dasheng: type) -> nn.Module:
    """A small package Dasheng in eval mode with every weight and BatchNorm statistic random
    (its own init leaves LayerNorms at 1/0 and biases at 0, which would hide mistakes)."""
    torch.manual_seed(0)
    model = package_dasheng(**TINY).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if key.startswith("front_end") or not value.is_floating_point():
                continue
            if key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=gen) * 20 + 5)
            elif key.endswith("running_mean"):
                value.copy_(torch.randn(value.shape, generator=gen) * 10 - 40)
            else:
                one = key.endswith(("norm1.weight", "norm2.weight", "norm.weight", "init_bn.1.weight"))
                value.copy_(torch.randn(value.shape, generator=gen) * 0.2 + (1.0 if one else 0.0))
    return model


@pytest.fixture(scope="module")
def release_file(reference: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release layout: {"model": the package model's state dict (front-end buffers included), "config"}."""
    path = tmp_path_factory.mktemp("release") / "dasheng_tiny.pt"
    torch.save({"model": reference.state_dict(), "config": dict(TINY)}, path)
    return path


def _hub_dir(reference: nn.Module, root: Path, weights: str = "model.safetensors") -> Path:
    """The hub layout: config.json with encoder_kwargs, weights prefixed 'encoder.', no front-end buffers."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(
        json.dumps(
            {"architectures": ["DashengModel"], "encoder_kwargs": TINY, "loss": "BCELoss", "model_type": "dasheng"}
        )
    )
    (root / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "feature_extractor_type": "DashengFeatureExtractor",
                "feature_size": 64,
                "sampling_rate": 16000,
                "f_min": 0,
                "f_max": 8000,
                "hop_size": 160,
                "win_size": 512,
                "n_fft": 512,
                "center": True,
            }
        )
    )
    state = {
        f"encoder.{k}": v.clone().contiguous()
        for k, v in reference.state_dict().items()
        if not k.startswith("front_end")
    }
    if weights == "model.safetensors.index.json":  # two shards, as save_pretrained writes large models
        names = sorted(state)
        shards = {"model-00001-of-00002.safetensors": names[:10], "model-00002-of-00002.safetensors": names[10:]}
        for shard, keys in shards.items():
            save_file({k: state[k] for k in keys}, str(root / shard))
        (root / weights).write_text(json.dumps({"weight_map": {k: s for s, keys in shards.items() for k in keys}}))
    elif weights.endswith(".safetensors"):
        save_file(state, str(root / weights))
    else:
        torch.save(state, root / weights)
    return root


@pytest.fixture(scope="module")
def hub_dir(reference: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _hub_dir(reference, tmp_path_factory.mktemp("hub") / "dasheng-tiny")


def _batch(samples: list[int], seed: int = 2, scale: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    audio, mask = torch.zeros(len(samples), max(samples)), torch.zeros(len(samples), max(samples), dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    for i, n in enumerate(samples):
        audio[i, :n] = scale * torch.randn(n, generator=gen)
        mask[i, :n] = 1
    return audio, mask


# --- front end -----------------------------------------------------------------------------------


def _htk_filter_bank() -> np.ndarray:
    """Dasheng's 64 HTK mel filters (no norm, 0-8 kHz) over 257 FFT bins, from the transformers formula."""
    return mel_filter_bank(
        num_frequency_bins=257,
        num_mel_filters=64,
        min_frequency=0,
        max_frequency=8000,
        sampling_rate=SAMPLE_RATE,
        norm=None,
        mel_scale="htk",
    )


def test_parity_filter_bank_is_the_htk_formula() -> None:
    ours = DashengFrontEnd().mel_fb
    htk = _htk_filter_bank()
    assert torch.equal(ours, torch.from_numpy(htk).float())
    # torchaudio's own float32 evaluation of the same formula rounds differently, by < 1e-5.
    assert (ours - _torchaudio_fbanks(257, 0.0, 8000.0, 64, SAMPLE_RATE)).abs().max() < 1e-5
    # By hand: filter m peaks at the HTK mel of (m + 1) / 65 of mel(8000 Hz) = 2840.02; filter 22 at
    # 1007.5 Hz, so FFT bin 32 (1000 Hz) sits on its rising edge at (1000 - 942.6) / (1007.5 - 942.6).
    centres = 700 * (10 ** (np.arange(1, 65) * 2595 * math.log10(1 + 8000 / 700) / 65 / 2595) - 1)
    assert centres[22] == pytest.approx(1007.5, abs=0.1) and centres[21] == pytest.approx(942.6, abs=0.1)
    assert ours[32, 22].item() == pytest.approx((1000 - centres[21]) / (centres[22] - centres[21]), abs=1e-5)
    assert ours[32, 22].item() == pytest.approx(0.884, abs=1e-3)


def _numpy_log_mel(audio: np.ndarray, pad_mode: str = "reflect") -> np.ndarray:
    """The front end by hand in float64: pad 256 samples each side (reflecting), a frame every
    160 samples, periodic Hann window, |rfft|², HTK filters, 10·log10(max(·, 1e-10)), one floor
    120 dB under the batch's maximum."""
    n_fft, hop = 512, 160
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    padded = np.pad(audio, ((0, 0), (n_fft // 2, n_fft // 2)), mode=pad_mode)
    starts = hop * np.arange(1 + (padded.shape[-1] - n_fft) // hop)
    power = np.abs(np.fft.rfft(padded[:, starts[:, None] + np.arange(n_fft)] * window, axis=-1)) ** 2
    fb = _htk_filter_bank()
    db = 10 * np.log10(np.maximum(power @ fb, 1e-10))
    return np.maximum(db, db.max() - 120.0).transpose(0, 2, 1)


def test_parity_front_end_equals_the_computation_by_hand() -> None:
    audio, _ = _batch([16000, 9000], scale=0.3)
    ours = DashengFrontEnd()(audio)
    assert ours.shape == (2, 64, 16000 // 160 + 1)
    expected = _numpy_log_mel(audio.double().numpy())
    assert np.abs(ours.numpy() - expected).max() < 2e-3  # dB; float32 against float64
    # The first frame half-overlaps the padding: zero padding would be far off.
    zero_padded = _numpy_log_mel(audio.double().numpy(), pad_mode="constant")
    assert np.abs(ours[..., 0].numpy() - zero_padded[..., 0]).max() > 1.0


def test_parity_pure_tone_lands_in_its_mel_bin() -> None:
    """1 kHz at amplitude 0.5 is FFT bin 32 exactly (32 periods per 512 samples): a periodic Hann
    window puts |X| = 0.5 · 256 / 2 = 64 there and 32 in bins 31 and 33, nothing elsewhere."""
    t = torch.arange(SAMPLE_RATE, dtype=torch.float64) / SAMPLE_RATE
    db = DashengFrontEnd()(torch.sin(2 * math.pi * 1000 * t).float()[None] * 0.5)[0, :, 50]
    fb = DashengFrontEnd().mel_fb
    assert int(db.argmax()) == 22
    expected = 10 * math.log10(float(fb[31:34, 22] @ torch.tensor([32.0**2, 64.0**2, 32.0**2])))
    assert db[22].item() == pytest.approx(expected, abs=1e-3)
    assert expected == pytest.approx(36.72, abs=0.01)
    assert db[40].item() < -60  # far from the tone only leakage of float rounding is left


def test_parity_silence_is_the_minus_100_db_floor() -> None:
    db = DashengFrontEnd()(torch.zeros(2, 8000))
    assert torch.all(db == -100.0)  # 10·log10(1e-10); the top_db floor (-100 - 120) does not bite


def test_parity_top_db_floor_is_shared_by_the_whole_batch() -> None:
    power = torch.tensor([[[1e4, 1e-9, 1.0]], [[1e-6, 1e-8, 1e-12]]])  # 40, -90, 0 | -60, -80, -100 dB (amin)
    db = power_to_db(power, top_db=120.0)
    # One floor for the batch, 40 - 120 = -80 dB (per clip, the second clip's would be -180 dB).
    assert db.flatten().tolist() == pytest.approx([40.0, -80.0, 0.0, -60.0, -80.0, -80.0], abs=1e-4)
    quiet = torch.zeros(1, 16000)
    quiet[0, 8000] = 1e-4
    alone, together = DashengFrontEnd()(quiet), DashengFrontEnd()(torch.cat([quiet, _batch([16000], scale=1.0)[0]]))
    assert alone.min() == -100.0 and together[0].min() > -100.0  # a loud neighbour raises the floor


def test_parity_front_end_stays_fp32_under_autocast() -> None:
    audio, _ = _batch([16000])
    front = DashengFrontEnd()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = front(audio)
    assert out.dtype == torch.float32 and torch.equal(out, front(audio))


# --- the body against the package ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ours(release_file: Path) -> tuple[nn.Module, DashengFrontEnd]:
    model, front = load_dasheng(str(release_file))
    return model.eval(), front


@pytest.mark.parametrize("with_lengths", [False, True], ids=["no-lengths", "x_length"])
def test_parity_body_matches_the_package(reference: nn.Module, ours: tuple, with_lengths: bool) -> None:
    """Same weights (the package model's, loaded strictly from its release file) and the SAME dB
    spectrogram into both: the package's own front end runs only on a stand-in torchaudio, so
    feeding both one spectrogram compares exactly the code after it: BatchNorm, patches, position
    embeddings, 10.08 s chunks with a 121-frame tail, key-padding masks, blocks, final norm."""
    model, front = ours
    samples = [SECONDS_25, 208_000]  # 25 s and 13 s, padded: masks differ per clip and chunk
    audio, _ = _batch(samples)
    with torch.no_grad():
        spec = front(audio)
        lengths = torch.tensor(samples) if with_lengths else None
        theirs = reference.forward_spectrogram(reference.init_bn(spec[:, None]), x_length=lengths)
        mine = model(spec, None if lengths is None else lengths // 640, "package")[0]
    assert theirs.shape == mine.shape == (2, 625, 64)
    if with_lengths:
        # Clip 1 has 325 frames: its third chunk is all padding, which the package attends
        # uniformly and we let attend normally; both are zeroed by the encoder.
        assert (theirs[0] - mine[0]).abs().max() < 1e-5 and (theirs[1, :504] - mine[1, :504]).abs().max() < 1e-5
        unmasked = reference.forward_spectrogram(reference.init_bn(spec[:, None]))
        assert (unmasked[1, :325] - theirs[1, :325]).abs().max() > 1e-2  # the mask matters
    else:
        assert (theirs - mine).abs().max() < 1e-5


def test_parity_train_mode_batchnorm_matches_the_package(reference: nn.Module, ours: tuple) -> None:
    """The official pipeline runs the frozen encoder in train mode while training: BatchNorm then
    normalises with the batch's statistics and moves its running statistics (momentum 0.01)."""
    theirs, (model, front) = copy.deepcopy(reference).train(), ours
    model = copy.deepcopy(model).train()
    audio, _ = _batch([48_000, 30_000])
    with torch.no_grad():
        spec = front(audio)
        expected = theirs.forward_spectrogram(theirs.init_bn(spec[:, None]))
        got = model(spec, None, "package")[0]
    assert (expected - got).abs().max() < 1e-5
    bn_theirs, bn_ours = theirs.init_bn[1], model.init_bn[1]
    assert torch.allclose(bn_theirs.running_mean, bn_ours.running_mean, atol=1e-5)
    assert torch.allclose(bn_theirs.running_var, bn_ours.running_var, atol=1e-4)
    assert not torch.allclose(bn_ours.running_mean, reference.init_bn[1].running_mean)  # they did move


def test_parity_masked_encoder_matches_the_package_end_to_end(reference: nn.Module, release_file: Path) -> None:
    """Waveform to features, each side with its own front end (the package on the stand-in)."""
    encoder = DashengEncoder(checkpoint=str(release_file), mode="masked")
    samples = [SECONDS_25, 150_000]
    audio, mask = _batch(samples)
    with torch.no_grad():
        features, frames = encoder(audio, mask)
        theirs = reference(audio, x_length=torch.tensor(samples))
    assert frames.sum(-1).tolist() == [625, 234]  # n // 640
    assert (features[0] - theirs[0]).abs().max() < 1e-4
    assert (features[1, :234] - theirs[1, :234]).abs().max() < 1e-4
    assert torch.all(features[1, 234:] == 0)


def _hub_code_forward(reference: nn.Module, spectrogram: torch.Tensor) -> torch.Tensor:
    """The hub checkpoints' ``AudioTransformerMAE_Encoder.forward`` (modeling_dasheng.py of the
    repository the hub code is published from), line by line on the package model's modules."""
    length = reference.target_length
    x = reference.init_bn(spectrogram[:, None])
    padding_start = 0
    if x.shape[-1] > length:
        splits = x.split(length, -1)
        if splits[-1].shape[-1] < length:
            pad = torch.zeros(*x.shape[:-1], length)
            pad[..., : splits[-1].shape[-1]] = splits[-1]
            padding_start = x.shape[-1] // reference.patch_stride[-1]
            splits = torch.stack((*splits[:-1], pad), dim=0)
        else:
            splits = torch.stack(splits[:-1], dim=0)
        n_splits = len(splits)
        x = torch.flatten(splits, 0, 1)
    else:
        n_splits = 1
    x = reference.forward_features(reference.patch_embed(x))
    x = torch.reshape(x, (x.shape[0] // n_splits, -1, x.shape[-1]))
    return x[:, :padding_start, :] if padding_start else x


def test_parity_official_mode_is_the_hub_model_code(reference: nn.Module, ours: tuple) -> None:
    model, front = ours
    audio, _ = _batch([SECONDS_25, 208_000])
    with torch.no_grad():
        spec = front(audio)
        hub = model(spec, None, "hub")[0]
        package = model(spec, None, "package")[0]
        assert (hub - _hub_code_forward(reference, spec)).abs().max() < 1e-5
        # The hub's reshape interleaves the clips: clip 0's second 10.08 s is clip 1's first.
        assert (hub[0, 252:504] - package[1, :252]).abs().max() < 1e-5
        assert (hub[0, :252] - package[0, :252]).abs().max() < 1e-5
        # Its zero-padded last chunk is not the package's tail encoded at its own length.
        assert (hub[1, 504:] - package[1, 504:]).abs().max() > 1e-2
        # A batch of exactly two chunks (2016 mel frames): the hub drops the second.
        exact = front(audio[:1, : 2015 * 160])
        assert exact.shape[-1] == 2016
        dropped = model(exact, None, "hub")[0]
        assert dropped.shape[1] == 252 and (dropped - _hub_code_forward(reference, exact)).abs().max() < 1e-5
        # Up to one chunk the hub, the package and its masked form without padding agree.
        short = front(audio[:1, :112_000])
        same = [
            model(short, None, "hub")[0],
            model(short, None, "package")[0],
            model(short, torch.tensor([175]), "package")[0],
        ]
        assert same[0].shape == (1, 175, 64)
        assert all((s - same[0]).abs().max() < 1e-5 for s in same[1:])


# --- the encoder ---------------------------------------------------------------------------------


def test_parity_encoder_modes_masks_and_contract(release_file: Path) -> None:
    audio, mask = _batch([16_639, 32_000])  # 25 and 50 frames of 640 samples
    official = DashengEncoder(checkpoint=str(release_file))
    masked = DashengEncoder(checkpoint=str(release_file), mode="masked")
    assert official.output_dim == 64 and official.frame_rate == 25.0 and not official.training
    with torch.no_grad():
        feats, frames = official(audio, mask)
        assert frames.dtype == torch.long and frames.tolist() == [[1] * 50] * 2  # as the example's None
        assert feats[0, 40:].abs().min() > 0  # padding frames carry features, as officially
        feats, frames = masked(audio, mask)
        assert frames.sum(-1).tolist() == [25, 50] and torch.all(feats[0, 25:] == 0)
    assert check_encoder("dasheng", {"checkpoint": str(release_file)})["frames"] == [50, 50]
    summary = check_encoder("dasheng", {"checkpoint": str(release_file), "mode": "masked"})
    assert summary["frames"] == [25, 50] and summary["frame_rate_declared"] == 25.0
    with pytest.raises(ValueError, match="at least 480 samples"):
        official(torch.zeros(1, 400))
    with pytest.raises(ValueError, match="mode must be one of"):
        DashengEncoder(checkpoint=str(release_file), mode="masked-padding")


def test_hidden_states(release_file: Path) -> None:
    encoder = DashengEncoder(checkpoint=str(release_file), mode="masked", output_hidden_states=True)
    audio, mask = _batch([16_000, 24_000])
    with torch.no_grad():
        features, frames = encoder(audio, mask)
    states = encoder.hidden_states
    assert len(states) == TINY["depth"] + 1 and torch.equal(states[-1], features)
    assert all(s.shape == features.shape and torch.all(s[0, 25:] == 0) for s in states)
    assert (states[0] - states[1]).abs().max() > 1e-2


# --- checkpoints ---------------------------------------------------------------------------------


def test_parity_both_layouts_load_strictly_and_agree(
    reference: nn.Module, release_file: Path, hub_dir: Path, tmp_path: Path
) -> None:
    audio, mask = _batch([20_000, 48_000])
    bin_dir = _hub_dir(reference, tmp_path / "bin", weights="pytorch_model.bin")
    sharded = _hub_dir(reference, tmp_path / "sharded", weights="model.safetensors.index.json")
    outputs = []
    for source in (
        dict(checkpoint=str(release_file)),
        dict(model_name=str(hub_dir)),
        dict(checkpoint=str(bin_dir)),
        dict(model_name=str(sharded)),
    ):
        encoder = DashengEncoder(**source)
        with torch.no_grad():
            outputs.append(encoder(audio, mask)[0])
    assert all(torch.equal(outputs[0], other) for other in outputs[1:])
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("front_end")}
    loaded = build_model(read_checkpoint(str(hub_dir))).state_dict()
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_corrupt_keys_are_named(reference: nn.Module, hub_dir: Path, tmp_path: Path) -> None:
    state = reference.state_dict()
    renamed = {("blocks.1.mlp.fc9.bias" if k == "blocks.1.mlp.fc2.bias" else k): v for k, v in state.items()}
    path = tmp_path / "renamed.pt"
    torch.save({"model": renamed, "config": dict(TINY)}, path)
    with pytest.raises(DashengCheckpointError) as info:
        DashengEncoder(checkpoint=str(path))
    message = str(info.value)
    assert str(path) in message and "release layout" in message
    assert "missing keys 1 (blocks.1.mlp.fc2.bias)" in message
    assert "unexpected keys 1 (blocks.1.mlp.fc9.bias)" in message
    # A shape that is not the config's, and a hub file whose keys lack the 'encoder.' prefix.
    shaped = dict(state, time_pos_embed=torch.zeros(1, 64, 1, 250))
    torch.save({"model": shaped, "config": dict(TINY)}, path)
    shape_message = r"time_pos_embed \(1, 64, 1, 250\) \(expected \(1, 64, 1, 252\)\)"
    with pytest.raises(DashengCheckpointError, match=shape_message):
        DashengEncoder(checkpoint=str(path))
    flat = _hub_dir(reference, tmp_path / "flat")
    save_file(
        {k: v.contiguous() for k, v in state.items() if not k.startswith("front_end")}, str(flat / "model.safetensors")
    )
    with pytest.raises(DashengCheckpointError, match=r"hub layout .* unexpected keys 35 \(blocks.0.attn.proj.bias"):
        DashengEncoder(model_name=str(flat))
    with pytest.raises(DashengCheckpointError, match="no such file or directory"):
        DashengEncoder(checkpoint=str(tmp_path / "missing" / "dasheng.pt"))


def test_release_front_end_buffers_are_checked(reference: nn.Module, tmp_path: Path) -> None:
    state = dict(reference.state_dict())
    state["front_end.0.mel_scale.fb"] = _torchaudio_fbanks(257, 0.0, 7000.0, 64, SAMPLE_RATE)
    path = tmp_path / "other_front_end.pt"
    torch.save({"model": state, "config": dict(TINY)}, path)
    with pytest.raises(DashengCheckpointError, match="front_end.0.mel_scale.fb .* another mel front end"):
        DashengEncoder(checkpoint=str(path))


def test_named_sizes(release_file: Path) -> None:
    assert SIZES == {"base": (768, 12, 12), "0.6B": (1280, 32, 16), "1.2B": (1536, 40, 24)}
    assert HUB_IDS == {
        "base": "mispeech/dasheng-base",
        "0.6B": "mispeech/dasheng-0.6B",
        "1.2B": "mispeech/dasheng-1.2B",
    }
    with pytest.raises(EncoderContractError, match=r"not Dasheng-base \{'embed_dim': 768"):
        build_encoder("dasheng-base", {"checkpoint": str(release_file)})
    with pytest.raises(EncoderContractError, match=r"not Dasheng-1.2B"):
        build_encoder("dasheng-1.2b", {"model_name": str(release_file)})


def test_parity_hub_load_draws_what_the_official_model_build_draws(release_file: Path, hub_dir: Path) -> None:
    """transformers builds the hub model with init functions disabled, but its two position
    embeddings are ``torch.randn`` calls: the official LoRA and projector start after them."""
    torch.manual_seed(0)
    load_dasheng(str(hub_dir))
    after_hub = torch.randn(4)
    torch.manual_seed(0)
    torch.randn(1, 64, 1, 252), torch.randn(1, 64, 1, 1)
    assert torch.equal(after_hub, torch.randn(4))
    torch.manual_seed(0)
    load_dasheng(str(release_file))  # not the official example's path: draws nothing
    after_release = torch.randn(4)
    torch.manual_seed(0)
    assert torch.equal(after_release, torch.randn(4))


def test_hub_id_offline_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty_cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "xares_fusion.cli", "check-encoder", "dasheng-base"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 5 and "Traceback" not in proc.stderr  # EncoderError
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "could not load 'mispeech/dasheng-base'" in lines[0]
