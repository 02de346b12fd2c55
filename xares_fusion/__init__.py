"""xares-fusion: benchmark audio encoders and fusion front-ends as the ear of an audio LLM."""

__version__ = "0.1.0"
