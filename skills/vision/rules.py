"""Per-product rule configuration (``ProductRules``) and the rule checks.

Geometry in the rules is given as *fractions of the part* in its canonical
view: the part's long axis runs along +x (left → right), its short axis along
+y (top → bottom), ``(0, 0)`` is the top-left corner of the part's bounding
rectangle and ``(1, 1)`` the bottom-right one.  Which end of the part is +x is
decided by the label: when ``label_box`` is set, the model picks the
orientation that puts the consistent (label-like) region inside the box.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import ConfigDict, Field, field_validator, model_validator

from drivers.configmodel import ConfigModel

__all__ = ["ProductRules", "RULE_KINDS"]

RULE_KINDS = ("missing_label", "skewed_label", "seal_contamination", "underfill", "wrong_size")


class ProductRules(ConfigModel):
    """Rule checks for one product.  Every check can be switched off with ``null``."""

    model_config = ConfigDict(extra="forbid")

    name: str = "product"
    label_box: tuple[float, float, float, float] | None = Field(
        None, description="expected label rectangle (x0, y0, x1, y1) as fractions of the part; null: no label rule")
    label_angle_tol_deg: float = Field(5.0, gt=0, le=45, description="label skew tolerance (deg)")
    label_min_match: float | None = Field(
        None, ge=-1, le=1, description="label template match below this means missing (null: learned)")
    seal_band_frac: float | None = Field(
        0.05, gt=0, lt=0.5, description="seal band width as a fraction of the part's short side; null: no seal rule")
    seal_min_area_frac: float = Field(
        0.0008, gt=0, lt=0.5, description="smallest contamination blob (share of the part area) that fails the seal rule")
    fill_range: tuple[float, float] | None = Field(
        None, description="allowed contents coverage of the well (0..1); null: learned from the good images")
    fill_check: bool = Field(True, description="check fill coverage at all")
    part_size_tol: float | None = Field(0.08, gt=0, lt=1, description="relative tolerance on part length/width")
    anomaly_margin: float = Field(1.0, gt=0, le=10, description="multiplies the anomaly threshold fitted on good images")

    @field_validator("label_box")
    @classmethod
    def _box(cls, v):
        if v is None:
            return v
        x0, y0, x1, y1 = v
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ValueError("label_box must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        return v

    @field_validator("fill_range")
    @classmethod
    def _fill(cls, v):
        if v is None:
            return v
        lo, hi = v
        if not (0.0 <= lo < hi <= 1.0):
            raise ValueError("fill_range must satisfy 0 <= min < max <= 1")
        return v

    @model_validator(mode="after")
    def _ok(self):
        return self


# --------------------------------------------------------------------------- helpers used by the inspector
def part_to_canon_box(box: tuple[float, float, float, float], cw: int, ch: int, margin: float) -> tuple[int, int, int, int]:
    """Fractions of the part → canonical pixel box (x0, y0, x1, y1), clipped."""
    def fx(f: float, n: int) -> int:
        return int(round((margin + f) / (1 + 2 * margin) * n))
    x0, y0, x1, y1 = box
    return (max(0, fx(x0, cw)), max(0, fx(y0, ch)), min(cw, fx(x1, cw)), min(ch, fx(y1, ch)))


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float32).ravel() - float(a.mean())
    b = b.astype(np.float32).ravel() - float(b.mean())
    d = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / d) if d > 1e-9 else 0.0


class LabelMatcher:
    """Finds the label (a learned template) in a canonical view: best match score and angle."""

    SEARCH = 4  # px of translation search at half canonical scale

    def __init__(self, template: np.ndarray, box_half: tuple[int, int, int, int]):
        self.template = template.astype(np.float32)     # (h, w) gray, half canonical scale
        self.box = box_half

    def match(self, gray_half: np.ndarray, angles=None, known: dict[float, float] | None = None) -> tuple[float, float]:
        """Best match score and its angle.  ``known``: scores already computed for some angles on this same
        view (each score is a deterministic function of the view and the angle, so reusing one changes nothing)."""
        x0, y0, x1, y1 = self.box
        cx, cy = (x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0
        tw, th = x1 - x0, y1 - y0
        s = self.SEARCH

        def score(a: float) -> float:
            M = cv2.getRotationMatrix2D((cx, cy), a, 1.0)   # rotate the view by +a about the label centre
            M[0, 2] -= x0 - s
            M[1, 2] -= y0 - s
            patch = cv2.warpAffine(gray_half, M, (tw + 2 * s, th + 2 * s), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)
            r = cv2.matchTemplate(patch, self.template, cv2.TM_CCOEFF_NORMED)
            return float(r.max())

        if angles is not None and len(angles) == 1:      # a single, unrefined hypothesis
            return score(float(angles[0])), float(angles[0])
        coarse = angles if angles is not None else np.arange(-25.0, 25.1, 5.0)
        known = known or {}
        res = {float(a): known[float(a)] if float(a) in known else score(float(a)) for a in coarse}
        a0 = max(res, key=res.get)
        for a in (a0 - 2.5, a0 - 1.25, a0 + 1.25, a0 + 2.5):
            res[a] = score(a)
        a1 = max(res, key=res.get)
        # a rotation only counts when it explains the label clearly better than "straight"
        if res[a1] - res[0.0] < 0.06:
            a1 = 0.0
        return res[a1], a1


def floor_like(lab_half: np.ndarray, band_lab: np.ndarray, ref_l: float | None = None) -> np.ndarray:
    """Pixels that look like the bare tray (close in chroma to the seal band, plausible lightness).

    ``ref_l``: the band's lightness (8-bit Lab) on the good images. A dimmer or brighter light scales CIELAB's
    a*, b* of every colour by about the cube root of the light, as it does L* + 16: the chroma tolerance
    follows, so dim food is not read as bare tray."""
    tol = 12.0
    if ref_l is not None:
        k = (float(band_lab[0]) * (100.0 / 255.0) + 16.0) / (float(ref_l) * (100.0 / 255.0) + 16.0)
        tol *= min(max(k, 0.3), 1.5)
    a = lab_half[..., 1].astype(np.float32) - float(band_lab[1])
    b = lab_half[..., 2].astype(np.float32) - float(band_lab[2])
    chroma_ok = (a * a + b * b) < tol * tol
    L = lab_half[..., 0].astype(np.float32)
    lo, hi = 0.35 * float(band_lab[0]) - 10, 1.15 * float(band_lab[0]) + 12
    return chroma_ok & (L > lo) & (L < hi)


def angle_wrap(a: float) -> float:
    return (a + 180.0) % 360.0 - 180.0
