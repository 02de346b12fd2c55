"""Encoders: the contract, its checker and the built-in encoders (registered on import)."""

from . import dasheng, random_projection, spectral, ssl, whisper  # noqa: F401  (register built-ins)
from .contract import EncoderContractError, build_encoder, check_encoder, check_output

__all__ = ["EncoderContractError", "build_encoder", "check_encoder", "check_output"]

from .. import fusion  # noqa: E402,F401  (fusion front-ends are encoders too; they build on the above)
