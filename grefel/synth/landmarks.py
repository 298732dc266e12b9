"""Landmarks of the synthetic faces: where the renderer put each facial feature, in pixels.

:mod:`grefel.synth.faces` draws every face from polygons in face units mapped to pixels by one
similarity transform per image. This module replays an image's random stream up to that transform
(:func:`grefel.synth.faces._look`: the expression, the pose, the features' sideways shift) and maps
a fixed set of feature points through it, so the images themselves are untouched: ``draw_image`` gives
the same bytes as before, and :func:`landmarks` costs a few microseconds per image.

The 22 points (:data:`LANDMARKS`, image-left side first): per eye the outer and inner corners and
the middles of the upper and lower lids; per brow its inner end, middle and outer end; the nose
tip; the mouth's left and right corners and the middles of the upper and lower lips (on the
opening's edges, or on the closed line); the chin and the two jaw points half-way down the head's
outline. Coordinates are output pixels, x to the right and y down, with pixel ``k``'s centre at
``k`` (Pillow's polygon coordinates put pixel ``k``'s centre at ``k + 0.5``; measured on drawn
discs, their centroids lie 0.50 +- 0.05 px before the transformed centre), so a point ``(x, y)`` lies in pixel
``(round(x), round(y))``. Eye corners and lid middles are exact points of the drawn lid curves;
the nose tip is the bottom of the nose's shape for every style to within a few hundredths of a
face unit (about half a pixel at 128 px).
"""

from __future__ import annotations

import numpy as np

from grefel.synth import faces

LANDMARKS = (
    "eye_l_outer",
    "eye_l_inner",
    "eye_l_upper",
    "eye_l_lower",
    "eye_r_inner",
    "eye_r_outer",
    "eye_r_upper",
    "eye_r_lower",
    "brow_l_outer",
    "brow_l_mid",
    "brow_l_inner",
    "brow_r_inner",
    "brow_r_mid",
    "brow_r_outer",
    "nose_tip",
    "mouth_l",
    "mouth_r",
    "mouth_upper",
    "mouth_lower",
    "jaw_l",
    "chin",
    "jaw_r",
)
NUM_LANDMARKS = len(LANDMARKS)
# mirror pairs (for horizontal flips): index i <-> FLIP_PERMUTATION[i]
_PAIRS = {
    "eye_l_outer": "eye_r_outer",
    "eye_l_inner": "eye_r_inner",
    "eye_l_upper": "eye_r_upper",
    "eye_l_lower": "eye_r_lower",
    "brow_l_outer": "brow_r_outer",
    "brow_l_mid": "brow_r_mid",
    "brow_l_inner": "brow_r_inner",
    "mouth_l": "mouth_r",
    "jaw_l": "jaw_r",
}
_PAIRS.update({v: k for k, v in _PAIRS.items()})
FLIP_PERMUTATION = tuple(LANDMARKS.index(_PAIRS.get(n, n)) for n in LANDMARKS)
_OFFSET = -0.5  # Pillow's drawing coordinates centre output pixel k at k + 0.5 (at 2x and after the box reduce)


def face_points(ch: faces.Character, look) -> np.ndarray:
    """The 22 landmarks of one image in face units (before the pose transform), (22, 2)."""
    ex, dx = look.ex, look.dx
    pts = {}
    for side, tag in ((-1, "l"), (1, "r")):
        upper, lower = faces._eye_curves(ch, ex, side, dx)
        mid = len(upper) // 2
        outer, inner = (upper[0], upper[-1]) if side < 0 else (upper[-1], upper[0])
        pts[f"eye_{tag}_outer"], pts[f"eye_{tag}_inner"] = outer, inner
        pts[f"eye_{tag}_upper"], pts[f"eye_{tag}_lower"] = upper[mid], lower[mid]
        # the brow as _draw_eye draws it: from the inner to the outer end, arched in the middle
        inner_x = side * (ch.eye_x - ch.eye_w * 0.95 * ch.brow_len) + dx
        outer_x = side * (ch.eye_x + ch.eye_w * 1.05 * ch.brow_len) + dx
        base = ch.eye_y - ch.eye_h - ch.brow_gap - ex.brow_raise
        inner_y, outer_y = base - ex.brow_inner, base + 0.35 * ex.brow_inner
        pts[f"brow_{tag}_inner"] = (inner_x, inner_y)
        pts[f"brow_{tag}_mid"] = ((inner_x + outer_x) / 2, (inner_y + outer_y) / 2 - ex.brow_arch)
        pts[f"brow_{tag}_outer"] = (outer_x, outer_y)
    pts["nose_tip"] = (dx, ch.nose_y)
    centre, upper, lower = faces._mouth_curves(ch, ex, dx, look.sneer_side)
    mid = len(centre) // 2
    pts["mouth_l"], pts["mouth_r"] = centre[0], centre[-1]
    pts["mouth_upper"], pts["mouth_lower"] = upper[mid], lower[mid]
    # the head outline of _draw_head at t = 3pi/4, pi/2, pi/4 (jaw taper below the centre line)
    for name, t in (("jaw_l", 0.75 * np.pi), ("chin", 0.5 * np.pi), ("jaw_r", 0.25 * np.pi)):
        hy = ch.head_h * np.sin(t)
        hx = ch.head_w * np.cos(t) * (1.0 - ch.jaw * max(hy / ch.head_h, 0.0) ** 2)
        pts[name] = (hx, hy)
    return np.array([pts[n] for n in LANDMARKS], np.float64)


def landmarks_of(ch: faces.Character, expression: str, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """The landmarks, in output pixels, of the image ``faces.draw_face(ch, expression, rng, size)``
    would draw from this ``rng`` (the stream is consumed as far as the pose: pass a fresh copy)."""
    look = faces._look(ch, expression, rng, size, None)
    p = face_points(ch, look)
    return p @ look.matrix[:, :2].T + look.matrix[:, 2] + _OFFSET


def landmarks(seed: int, char: int, expression: str, n: int, size: int = 128) -> np.ndarray:
    """(22, 2) float64 pixel coordinates of :data:`LANDMARKS` in
    ``faces.draw_image(seed, char, expression, n, size)``."""
    rng = faces._image_rng(seed, char, faces.EXPRESSIONS.index(expression), n)
    return landmarks_of(faces.make_character(seed, char), expression, rng, size)


def draw_with_landmarks(seed: int, char: int, expression: str, n: int, size: int = 128):
    """``(image, landmarks)``: ``faces.draw_image(...)`` (the same pixels) and its :func:`landmarks`."""
    return faces.draw_image(seed, char, expression, n, size), landmarks(seed, char, expression, n, size)
