"""Typed, reusable cell skills composed into behaviour trees.

Skills depend on driver contracts only (:mod:`drivers`), never on the
simulator or on a transport library.
"""

from .base import Skill, SkillContext, SkillParams, SkillResult, Status
from .library import get, registry
from .facts import CellFacts, TrackedPart

__all__ = ["CellFacts", "Skill", "SkillContext", "SkillParams", "SkillResult", "Status", "TrackedPart", "get", "registry"]
