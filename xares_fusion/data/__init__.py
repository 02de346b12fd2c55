"""Data: shard resolution, audio decoding, samples, the training mixture and batching."""
