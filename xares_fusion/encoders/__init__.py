"""Encoders: the contract, its checker and the built-in encoders (registered on import)."""

from . import logmel  # noqa: F401  (registers 'logmel')
from .contract import EncoderContractError, build_encoder, check_encoder, check_output

__all__ = ["EncoderContractError", "build_encoder", "check_encoder", "check_output"]
