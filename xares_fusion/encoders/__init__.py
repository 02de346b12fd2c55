"""Encoders: the contract, its checker, its front-end adapter and the built-in encoders
(registered on import). The fusion front-ends are encoders too, but they build on this package:
the encoder registry imports them on its first lookup (see :mod:`xares_fusion.registry`)."""

from . import dasheng, random_projection, spectral, ssl, whisper  # noqa: F401  (register built-ins)
from .contract import EncoderContractError, as_front_end, build_encoder, check_encoder, check_output

__all__ = ["EncoderContractError", "as_front_end", "build_encoder", "check_encoder", "check_output"]
