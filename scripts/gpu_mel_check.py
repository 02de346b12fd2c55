"""Whisper's log-mel computed on the GPU in torch against the Hugging Face extractor (numpy, CPU).

    python scripts/gpu_mel_check.py [--task mini-asr] [--clips 32]

Prints, for 80 and 128 mel bins, the largest absolute difference over the task's first eval clips
(in fp32 and under bf16 autocast, whose output must stay fp32) and the time of each side.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import WhisperFeatureExtractor

from xares_fusion.config import load_task
from xares_fusion.data.batching import pad_audio
from xares_fusion.data.samples import SkipCounter, iter_samples
from xares_fusion.data.shards import require_shards
from xares_fusion.encoders.whisper import whisper_log_mel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="mini-asr")
    parser.add_argument("--clips", type=int, default=32)
    args = parser.parse_args()
    device = torch.device("cuda")
    task = load_task(args.task)
    samples = iter_samples(require_shards(task.split("eval"), task.name, "eval"), task.key_for("eval"), SkipCounter())
    clips = [s.audio for _, s in zip(range(args.clips), samples)]
    audio, mask = pad_audio(clips)
    audio, lengths = audio.to(device), mask.sum(-1).to(device)
    for bins in (80, 128):
        extractor = WhisperFeatureExtractor(feature_size=bins)
        started = time.perf_counter()
        theirs = extractor([np.asarray(c) for c in clips], sampling_rate=16000, return_tensors="pt").input_features
        extractor_s = time.perf_counter() - started
        filters = torch.from_numpy(extractor.mel_filters).float().to(device)
        window = torch.hann_window(extractor.n_fft, device=device)
        whisper_log_mel(audio, lengths, extractor.n_samples, filters, window)  # warm-up
        torch.cuda.synchronize()
        started = time.perf_counter()
        ours = whisper_log_mel(audio, lengths, extractor.n_samples, filters, window)
        torch.cuda.synchronize()
        ours_s = time.perf_counter() - started
        with torch.autocast("cuda", dtype=torch.bfloat16):
            autocast = whisper_log_mel(audio, lengths, extractor.n_samples, filters, window)
        print(
            f"{bins} bins, {len(clips)} clips: max |torch on GPU - extractor| {(ours.cpu() - theirs).abs().max():.2e}, "
            f"under bf16 autocast {(autocast.float().cpu() - theirs).abs().max():.2e} ({autocast.dtype}); "
            f"extractor {extractor_s * 1e3:.0f} ms, GPU {ours_s * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    main()
