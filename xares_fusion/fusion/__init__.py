"""Fusion front-ends: several encoders combined into one stream, each registered as an encoder.

``Stream`` and ``FusionContext`` belong to :mod:`xares_fusion.frontend`; they are re-exported here
for the fusions' users.
"""

from ..frontend import FusionContext, Stream
from .base import FusionFrontEnd, RoutingStats, StftBranch
from .mowe import MoWEFusion
from .operators import AverageFusion, ConcatFusion, ExplicitInjectionFusion, GatedFusion, MoEFusion
from .pam import PaMFusion
from .qformer import WindowQFormerFusion
from .streams import AlignmentError, align_streams

__all__ = [
    "AlignmentError",
    "AverageFusion",
    "ConcatFusion",
    "ExplicitInjectionFusion",
    "FusionContext",
    "FusionFrontEnd",
    "GatedFusion",
    "MoEFusion",
    "MoWEFusion",
    "PaMFusion",
    "RoutingStats",
    "StftBranch",
    "Stream",
    "WindowQFormerFusion",
    "align_streams",
]
