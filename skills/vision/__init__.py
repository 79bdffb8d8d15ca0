"""Vision inspection: localise a part, align it, score it against good parts, apply product rules.

Public API::

    from skills.vision import Inspector, InspectionResult, InspectionError, ProductRules, draw_overlay, identify

Imports only stdlib, numpy, OpenCV and pydantic (layer rule for ``skills/``).
"""

from .inspector import MODEL_VERSION, InspectionResult, Inspector, draw_overlay, identify
from .localise import InspectionError, as_bgr
from .rules import RULE_KINDS, ProductRules

__all__ = ["Inspector", "InspectionResult", "InspectionError", "ProductRules", "RULE_KINDS",
           "MODEL_VERSION", "as_bgr", "draw_overlay", "identify"]
