"""Constants every layer shares; torch-free so that configs and metrics can import them."""

from __future__ import annotations

SAMPLE_RATE = 16_000
"""Audio rate of the whole pipeline (Hz): every shard is decoded, and every encoder fed, at 16 kHz mono,
as in the official pipeline."""
