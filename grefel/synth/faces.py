"""A built-in synthetic facial-expression dataset: procedurally drawn faces in FERG-DB layout.

FERG-DB (Aneja et al. 2016) is a set of rendered cartoon characters showing the seven basic
expressions. ``grefel synth`` draws a small dataset in its spirit so that the whole pipeline
(prepare -> refine -> corrupt -> train -> report) runs with no download, and writes it in the raw
FERG-DB layout so it goes through the real ``grefel prepare ferg`` reader::

    OUT/<character>/<character>_<expression>/<character>_<expression>_<n>.png     (n = 1, 2, ...)
    OUT/.grefel-synth.json                                                      (settings, state)

What makes an expression is *geometry only*: brow height, slant and arch, how far the eyelids
open, and the mouth's width, corner curve, opening and shape (plus a few lines: nose wrinkles,
glabella lines). Everything else is drawn from distributions that do not depend on the class:

* per character: head shape and jaw, skin / hair / iris / clothes colours, hair style, ears,
  glasses, eye spacing and size, brow thickness, nose style, feature heights, expressiveness;
* per image: expression intensity and small per-feature jitter, pose (rotation, scale, shift,
  a small yaw-like shift of the features), background, lighting (brightness, directional
  gradient, colour cast), blur and pixel noise, and whether the PNG is RGBA (real FERG renders
  carry alpha) or RGB.

Faces are left-right symmetric in distribution (the one asymmetric cue, disgust's sneer, picks
its side at random), so horizontal flips keep the class.

Class imbalance (documented formula). Expressions are ranked by how common they are in
in-the-wild data (RAF-DB): ``FREQUENCY_ORDER`` = joy, neutral, sadness, surprise, anger, disgust,
fear. With ``per_class = N`` (images of the most frequent expression, per character) and
``imbalance = R`` (most / least frequent), the expression of rank ``r = 0..6`` gets, per
character, ``n_r = max(1, round(N * R ** (-r / 6)))`` images: a geometric ramp from ``N`` down to
``N / R``. ``R = 1`` is balanced.

Determinism: image ``n`` of expression ``e`` of character ``c`` is drawn from its own random
stream seeded by ``(seed, c, e, n)``, so the files are byte-identical for a seed whatever the
number of workers, and raising ``per_class`` only adds files.

Safety: every PNG is written under a temporary name and renamed (a killed run never leaves half a
file); ``.grefel-synth.json`` records the settings, so a rerun with the same settings resumes
(or does nothing when complete) and a rerun with other settings is refused.
"""

from __future__ import annotations

import io
import math
import os
import zlib
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from grefel.core.console import make_console
from grefel.core.errors import GrefelError
from grefel.core.io import atomic_path, read_json, writable_dir, write_json
from grefel.core.paths import SYNTH_MARKER
from grefel.core.settings import check_seed
from grefel.core.version import __version__

# FERG-DB's expressions in its README order (the folder suffixes).
EXPRESSIONS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
# Most to least frequent, as in in-the-wild data (RAF-DB); drives the class imbalance.
FREQUENCY_ORDER = ("joy", "neutral", "sadness", "surprise", "anger", "disgust", "fear")
# Character names: letters only (the FERG-DB reader's file-name pattern), none a real FERG-DB
# character; beyond 26 characters, two names joined ("avaava", "boava", ...).
NAMES = (
    "ava",
    "bo",
    "cleo",
    "dax",
    "eli",
    "finn",
    "gia",
    "hugo",
    "ivy",
    "jax",
    "kai",
    "lux",
    "milo",
    "nia",
    "otto",
    "pip",
    "quin",
    "remy",
    "sol",
    "tess",
    "uma",
    "vic",
    "wren",
    "xan",
    "yara",
    "zed",
)
MAX_CHARACTERS = len(NAMES) * (len(NAMES) + 1)
SUPERSAMPLE = 2  # draw at 2x and box-downsample: cheap anti-aliasing


def character_names(characters: int) -> list[str]:
    """Folder names of the first ``characters`` characters."""
    k = len(NAMES)
    return [NAMES[i % k] + (NAMES[i // k - 1] if i >= k else "") for i in range(characters)]


def class_counts(per_class: int, imbalance: float = 3.0) -> dict[str, int]:
    """Images per character for each expression: ``n_r = max(1, round(N * R ** (-r / 6)))``.

    ``r`` is the expression's rank in :data:`FREQUENCY_ORDER`; the result is in :data:`EXPRESSIONS` order.
    """
    ranks = {name: r for r, name in enumerate(FREQUENCY_ORDER)}
    last = len(FREQUENCY_ORDER) - 1
    return {e: max(1, round(per_class * imbalance ** (-ranks[e] / last))) for e in EXPRESSIONS}


# ---------------------------------------------------------------------------------------------
# Expression geometry. Face units: the head is centred at (0, 0), about 1.8 wide and 2.3 tall,
# y points down. Each expression is a set of feature parameters; an image at intensity u draws
# neutral + u * (expression - neutral), plus a small per-feature jitter.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    brow_raise: float = 0.0  # whole brow up (+) / down (-)
    brow_inner: float = 0.0  # inner end up (+, sad/fearful "/\") or down (-, angry "\/")
    brow_arch: float = 0.03  # middle of the brow above the line between its ends
    eye_upper: float = 1.0  # upper-lid opening, x the character's eye height
    eye_lower: float = 1.0  # lower-lid opening (small = cheeks pushed up, squint)
    mouth_width: float = 1.0  # x the character's mouth half-width
    mouth_curve: float = 0.0  # corners up (+, smile) or down (-, frown)
    mouth_open: float = 0.0  # gap between the lips at the centre
    mouth_round: float = 1.0  # exponent of the opening profile: 0.5 round "O", 1 "D", small = slot
    upper_share: float = 0.5  # share of the opening above the lips' centre line
    teeth: float = 0.0  # height of the visible upper-teeth band, share of the opening
    sneer: float = 0.0  # one side of the upper lip lifted (side drawn at random)
    wrinkles: float = 0.0  # nose-bridge wrinkles (disgust)
    glabella: float = 0.0  # vertical lines between the brows (anger)


NEUTRAL = Expression()
GEOMETRY: dict[str, Expression] = {
    "neutral": NEUTRAL,
    "joy": Expression(
        brow_raise=0.03,
        brow_arch=0.06,
        eye_upper=0.8,
        eye_lower=0.25,
        mouth_width=1.35,
        mouth_curve=0.13,
        mouth_open=0.12,
        upper_share=0.1,
        teeth=0.45,
    ),
    "sadness": Expression(
        brow_raise=0.03,
        brow_inner=0.15,
        brow_arch=-0.01,
        eye_upper=0.55,
        eye_lower=0.9,
        mouth_width=0.9,
        mouth_curve=-0.12,
    ),
    "anger": Expression(
        brow_raise=-0.09,
        brow_inner=-0.16,
        brow_arch=-0.02,
        eye_upper=0.6,
        eye_lower=0.6,
        mouth_width=0.9,
        mouth_curve=-0.05,
        mouth_open=0.08,
        mouth_round=0.3,
        teeth=1.0,
        glabella=1.0,
    ),
    "surprise": Expression(
        brow_raise=0.17,
        brow_inner=0.02,
        brow_arch=0.1,
        eye_upper=1.65,
        eye_lower=1.3,
        mouth_width=0.6,
        mouth_open=0.26,
        mouth_round=0.5,
    ),
    "fear": Expression(
        brow_raise=0.1,
        brow_inner=0.12,
        brow_arch=-0.02,
        eye_upper=1.6,
        eye_lower=1.25,
        mouth_width=1.4,
        mouth_curve=-0.05,
        mouth_open=0.11,
        mouth_round=0.25,
        teeth=0.4,
    ),
    "disgust": Expression(
        brow_raise=-0.06,
        brow_inner=-0.06,
        eye_upper=0.5,
        eye_lower=0.45,
        mouth_width=1.05,
        mouth_curve=-0.07,
        mouth_open=0.07,
        upper_share=0.9,
        teeth=0.55,
        sneer=0.14,
        wrinkles=1.0,
    ),
}


def _expression_for_image(name: str, rng: np.random.Generator, expressiveness: float) -> Expression:
    """The expression's parameters for one image: intensity, per-feature jitter, mouth variants."""
    target = GEOMETRY[name]
    if name == "joy" and rng.random() < 0.3:  # closed-mouth smile
        target = replace(target, mouth_open=0.0, teeth=0.0, mouth_width=1.2)
    if name == "anger" and rng.random() < 0.5:  # lips pressed together instead of bared teeth
        target = replace(target, mouth_open=0.0, teeth=0.0, mouth_width=0.75)
    u = expressiveness * rng.uniform(0.7, 1.1)
    out = {}
    for f in fields(Expression):
        n, t = getattr(NEUTRAL, f.name), getattr(target, f.name)
        out[f.name] = n + u * (t - n)
    jitter = rng.normal(0.0, 1.0, 8)
    out["brow_raise"] += 0.015 * jitter[0]
    out["brow_inner"] += 0.015 * jitter[1]
    out["brow_arch"] += 0.01 * jitter[2]
    out["eye_upper"] = max(0.25, out["eye_upper"] + 0.06 * jitter[3])
    out["eye_lower"] = max(0.2, out["eye_lower"] + 0.06 * jitter[4])
    out["mouth_width"] += 0.05 * jitter[5]
    out["mouth_curve"] += 0.012 * jitter[6]
    out["mouth_open"] = max(0.0, out["mouth_open"] + 0.01 * jitter[7]) if out["mouth_open"] > 0 else 0.0
    return Expression(**out)


# ---------------------------------------------------------------------------------------------
# Characters
# ---------------------------------------------------------------------------------------------

_SKIN = np.array(
    [[255, 224, 196], [241, 194, 155], [224, 172, 130], [198, 134, 90], [160, 102, 66], [128, 82, 54], [104, 66, 44]],
    np.float64,
)
_SKIN_STYLISED = np.array([[200, 230, 180], [190, 205, 240], [235, 200, 235]], np.float64)
_HAIR = np.array(
    [
        [25, 20, 18],
        [70, 45, 30],
        [120, 80, 45],
        [200, 160, 90],
        [230, 210, 150],
        [150, 60, 30],
        [170, 170, 175],
        [60, 70, 140],
        [150, 60, 120],
    ],
    np.float64,
)
_IRIS = np.array([[70, 45, 25], [40, 90, 160], [60, 120, 70], [110, 90, 60], [40, 40, 40]], np.float64)


@dataclass(frozen=True)
class Character:
    """Everything about a character that stays the same across its images."""

    name: str
    head_w: float  # half-width of the head
    head_h: float  # half-height of the head
    jaw: float  # narrowing of the lower half towards the chin
    skin: tuple
    hair: tuple
    iris: tuple
    clothes: tuple
    hair_style: int  # 0 short, 1 long, 2 bald, 3 bob with fringe
    hairline: float  # height of the hair's lower edge at the centre
    eye_x: float
    eye_y: float
    eye_w: float
    eye_h: float
    eye_tilt: float  # outer corners up (+) or down (-)
    iris_r: float
    brow_gap: float
    brow_w: float  # brow thickness
    brow_len: float
    nose_y: float
    nose_style: int  # 0 line + nostrils, 1 button, 2 shadow triangle
    mouth_y: float
    mouth_w: float
    lip_w: float  # lip line thickness
    glasses: bool
    expressiveness: float


def _colour(rng: np.random.Generator, palette: np.ndarray, spread: float) -> tuple:
    i = rng.integers(len(palette))
    j = rng.integers(len(palette))
    mix = palette[i] + rng.uniform(0, 0.3) * (palette[j] - palette[i])
    return tuple(int(v) for v in np.clip(mix + rng.normal(0, spread, 3), 0, 255))


@lru_cache(maxsize=256)
def make_character(seed: int, index: int) -> Character:
    """Character ``index`` of the set drawn with ``seed`` (its own random stream)."""
    rng = np.random.default_rng([seed, 0, index])
    head_w = rng.uniform(0.82, 0.98)
    return Character(
        name=character_names(index + 1)[-1],
        head_w=head_w,
        head_h=rng.uniform(1.08, 1.25),
        jaw=rng.uniform(0.0, 0.3),
        skin=_colour(rng, _SKIN_STYLISED if rng.random() < 0.15 else _SKIN, 8),
        hair=_colour(rng, _HAIR, 10),
        iris=_colour(rng, _IRIS, 10),
        clothes=tuple(int(v) for v in rng.integers(20, 235, 3)),
        hair_style=int(rng.integers(4)),
        hairline=rng.uniform(-0.82, -0.62),
        eye_x=rng.uniform(0.36, 0.43),
        eye_y=rng.uniform(-0.06, 0.06),
        eye_w=rng.uniform(0.19, 0.24),
        eye_h=rng.uniform(0.11, 0.14),
        eye_tilt=rng.uniform(-0.02, 0.03),
        iris_r=rng.uniform(0.085, 0.105),
        brow_gap=rng.uniform(0.1, 0.14),
        brow_w=rng.uniform(0.06, 0.09),
        brow_len=rng.uniform(0.9, 1.1),
        nose_y=rng.uniform(0.27, 0.34),
        nose_style=int(rng.integers(3)),
        mouth_y=rng.uniform(0.54, 0.62),
        mouth_w=rng.uniform(0.26, 0.33),
        lip_w=rng.uniform(0.04, 0.055),
        glasses=bool(rng.random() < 0.25),
        expressiveness=rng.uniform(0.9, 1.1),
    )


# ---------------------------------------------------------------------------------------------
# Drawing: all shapes are polygons in face units, mapped to pixels by one similarity transform
# per image (rotation, scale, shift), drawn at SUPERSAMPLE x with Pillow and box-downsampled.
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _unit_arc(t0: float, t1: float, n: int) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return np.stack([np.cos(t), np.sin(t)], 1)


def _arc(cx, cy, rx, ry, t0=0.0, t1=2 * math.pi, n=28) -> np.ndarray:
    return _unit_arc(t0, t1, n) * (rx, ry) + (cx, cy)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in [-0.5, 0.5), for the lighting gradient."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    return xx, yy


@lru_cache(maxsize=8)
def _noise_bank(size: int) -> np.ndarray:
    """A fixed field of unit Gaussian noise, twice the image size; each image takes a random window.

    Much cheaper than fresh noise per image (drawing 3 x size^2 normals costs as much as the face),
    and the noise is independent of the class either way.
    """
    return np.random.default_rng(20240517).standard_normal((2 * size, 2 * size, 3), dtype=np.float32)


def _luma(c: tuple) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _shade(c: tuple, f: float) -> tuple:
    return tuple(int(min(255, max(0, v * f))) for v in c)


class _Canvas:
    """An RGB image (plus an alpha mask when ``rgba``), drawn in face units through a similarity transform."""

    def __init__(self, size: int, background: tuple, matrix: np.ndarray, rgba: bool):
        self.px = size * SUPERSAMPLE
        self.m = matrix * SUPERSAMPLE
        self.img = Image.new("RGB", (self.px, self.px), background)
        self.mask = Image.new("L", (self.px, self.px), 0) if rgba else None
        self.d = ImageDraw.Draw(self.img)
        self.dm = ImageDraw.Draw(self.mask) if rgba else None
        self.unit = float(np.hypot(*self.m[:, 0]))  # pixels per face unit

    def xy(self, pts: np.ndarray) -> list:
        p = pts @ self.m[:, :2].T + self.m[:, 2]
        return p.ravel().tolist()

    def poly(self, pts, fill, outline=None, width=0.0, silhouette=False):
        xy = self.xy(pts)
        w = max(1, round(width * self.unit)) if outline is not None else 0
        self.d.polygon(xy, fill=fill, outline=outline, width=w)
        if silhouette and self.dm is not None:
            self.dm.polygon(xy, fill=255, outline=255 if w else None, width=w)

    def line(self, pts, fill, width, joint=None):
        self.d.line(self.xy(pts), fill=fill, width=max(1, round(width * self.unit)), joint=joint)


def _eye_curves(ch: Character, ex: Expression, side: int, dx: float):
    """Upper and lower lid curves of one eye (side -1 = image left) as (n, 2) point arrays."""
    cx, cy = side * ch.eye_x + dx, ch.eye_y
    x = np.linspace(-1.0, 1.0, 15)
    prof = (1.0 - x**2) ** 0.8
    tilt = -ch.eye_tilt * side * x  # outer corner (side * x > 0) up when tilt > 0
    upper = np.stack([cx + ch.eye_w * x, cy + tilt - ex.eye_upper * ch.eye_h * prof], 1)
    lower = np.stack([cx + ch.eye_w * x, cy + tilt + 0.7 * ex.eye_lower * ch.eye_h * prof], 1)
    return upper, lower


def _clip_between(pts: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Clamp a convex shape to the region between two lid curves (each a function of x)."""
    x = np.clip(pts[:, 0], upper[0, 0], upper[-1, 0])
    top = np.interp(x, upper[:, 0], upper[:, 1])
    bot = np.interp(x, lower[:, 0], lower[:, 1])
    return np.stack([x, np.clip(pts[:, 1], top, bot)], 1)


def _mouth_curves(ch: Character, ex: Expression, dx: float, sneer_side: int):
    """Centre line, upper-lip and lower-lip curves of the mouth."""
    w = ch.mouth_w * ex.mouth_width
    x = np.linspace(-1.0, 1.0, 21)
    centre = ch.mouth_y - ex.mouth_curve * x**2
    prof = np.clip(1.0 - x**2, 0.0, 1.0) ** ex.mouth_round
    lift = ex.sneer * np.clip(sneer_side * x, 0.0, None) * (1.0 - x**2) ** 0.3
    upper = centre - ex.mouth_open * ex.upper_share * prof - lift
    lower = centre + ex.mouth_open * (1.0 - ex.upper_share) * prof
    centre = centre - 0.5 * lift
    xs = dx + w * x
    return np.stack([xs, centre], 1), np.stack([xs, upper], 1), np.stack([xs, lower], 1)


@dataclass(frozen=True)
class _Look:
    """One image's expression, pose and line colours (drawn from its random stream, in this order)."""

    ex: Expression
    rgba: bool
    sneer_side: int
    matrix: np.ndarray  # face units -> output pixels
    dx: float  # the features' sideways shift ("yaw")
    gaze: np.ndarray
    background: tuple
    line_col: tuple  # lines: clearly darker than the skin
    brow_col: tuple


def _look(ch: Character, expression: str, rng: np.random.Generator, size: int, rgba: bool | None) -> _Look:
    ex = _expression_for_image(expression, rng, ch.expressiveness)
    if rgba is None:
        rgba = bool(rng.random() < 0.3)
    sneer_side = 1 if rng.random() < 0.5 else -1
    # pose: rotation, scale, shift; "yaw": the features slide sideways on the head
    angle = math.radians(rng.uniform(-10, 10))
    scale = size * 0.31 * rng.uniform(0.9, 1.08)
    shift = size * (0.5 + rng.uniform(-0.05, 0.05, 2)) + np.array([0.0, 0.03 * size])
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    matrix = np.array([[c, -s, shift[0]], [s, c, shift[1]]])
    dx = rng.uniform(-0.06, 0.06)
    gaze = rng.uniform(-0.3, 0.3, 2) * np.array([1.0, 0.5])
    background = tuple(int(v) for v in rng.integers(30, 236, 3))
    # lines and brows always clearly darker than the skin, whatever the skin and hair colours
    line_col = _shade(ch.skin, 0.4 if _luma(ch.skin) > 150 else 0.25)
    brow_col = _shade(ch.hair, 0.7)
    if _luma(brow_col) > _luma(ch.skin) - 90:
        brow_col = _shade(ch.skin, 0.25)
    return _Look(ex, rgba, sneer_side, matrix, dx, gaze, background, line_col, brow_col)


def draw_face(
    ch: Character, expression: str, rng: np.random.Generator, size: int = 128, rgba: bool | None = None
) -> Image.Image:
    """One image of ``ch`` showing ``expression``, with this image's random pose, light and noise.

    Returns an RGB image, or RGBA (alpha = head, neck and shoulders) when ``rgba`` is true; with
    ``rgba=None`` the stream decides (30 % RGBA). Drawn back to front: body and head, fringe,
    eyes and brows, nose, mouth; then light, blur and noise at the output size.
    """
    look = _look(ch, expression, rng, size, rgba)
    cv = _Canvas(size, look.background, look.matrix, look.rgba)
    _draw_head(cv, ch, look)
    _draw_fringe(cv, ch)
    for side in (-1, 1):
        _draw_eye(cv, ch, look, side)
    _draw_glasses_and_frown(cv, ch, look)
    _draw_nose(cv, ch, look)
    _draw_mouth(cv, ch, look)
    return _develop(cv, rng, size, look.rgba)


def _draw_head(cv: _Canvas, ch: Character, look: _Look) -> None:
    """Shoulders and neck, back hair, ears, head."""
    skin, dark_skin, line_col = ch.skin, _shade(ch.skin, 0.72), look.line_col
    cv.poly(_arc(0, 2.05, 1.7, 0.75), ch.clothes, silhouette=True)
    cv.poly(np.array([[-0.34, 0.4], [0.34, 0.4], [0.38, 1.6], [-0.38, 1.6]]), dark_skin, silhouette=True)
    if ch.hair_style == 1:  # long: an arch from the crown down to the shoulders
        top = _arc(0, -0.1, ch.head_w * 1.18, ch.head_h * 1.02, math.pi, 2 * math.pi)
        back = np.concatenate([top, [[ch.head_w * 1.22, 1.15], [-ch.head_w * 1.22, 1.15]]])
        cv.poly(back, ch.hair, silhouette=True)
    elif ch.hair_style in (0, 3):
        cv.poly(
            _arc(0, -0.08, ch.head_w * 1.08, ch.head_h * (1.0 if ch.hair_style == 0 else 1.03)),
            ch.hair,
            silhouette=True,
        )
    for side in (-1, 1):
        cv.poly(_arc(side * ch.head_w * 0.97, ch.eye_y + 0.12, 0.12, 0.2), skin, line_col, 0.02, silhouette=True)
    t = np.linspace(0, 2 * math.pi, 48)
    hx, hy = ch.head_w * np.cos(t), ch.head_h * np.sin(t)
    hx = hx * (1.0 - ch.jaw * np.clip(hy / ch.head_h, 0, None) ** 2)
    cv.poly(np.stack([hx, hy], 1), skin, line_col, 0.025, silhouette=True)


def _draw_fringe(cv: _Canvas, ch: Character) -> None:
    """The hair's top cap down to a hairline that dips at the temples."""
    if ch.hair_style == 2:
        return
    a, b = ch.head_w * 1.04, ch.head_h * 1.04
    x = np.linspace(-a, a, 33)
    top = -b * np.sqrt(np.clip(1 - (x / a) ** 2, 0, 1)) - 0.02
    dip = 0.3 if ch.hair_style == 3 else 0.22
    hl = ch.hairline + (0.1 if ch.hair_style == 3 else 0.0) + dip * (x / a) ** 2
    hl = np.minimum(hl, b * np.sqrt(np.clip(1 - (x / a) ** 2, 0, 1)))
    cv.poly(np.concatenate([np.stack([x, top], 1), np.stack([x, hl], 1)[::-1]]), ch.hair)


def _draw_eye(cv: _Canvas, ch: Character, look: _Look, side: int) -> None:
    """White between the lids, iris and pupil clipped to it, lid lines; the brow; a glasses rim."""
    ex, dx, gaze = look.ex, look.dx, look.gaze
    upper, lower = _eye_curves(ch, ex, side, dx)
    cv.poly(np.concatenate([upper, lower[::-1]]), (250, 250, 248))
    centre = np.array([side * ch.eye_x + dx + gaze[0] * ch.eye_w * 0.5, ch.eye_y + gaze[1] * ch.eye_h * 0.3])
    cv.poly(_clip_between(_arc(*centre, ch.iris_r, ch.iris_r, n=24), upper, lower), ch.iris)
    cv.poly(_clip_between(_arc(*centre, ch.iris_r * 0.45, ch.iris_r * 0.45, n=16), upper, lower), (15, 15, 15))
    cv.line(upper, (30, 25, 25), 0.028, joint="curve")
    cv.line(lower[2:-2], look.line_col, 0.012)
    # brow: from the inner to the outer end, arched in the middle
    inner_x, outer_x = (
        side * (ch.eye_x - ch.eye_w * 0.95 * ch.brow_len) + dx,
        side * (ch.eye_x + ch.eye_w * 1.05 * ch.brow_len) + dx,
    )
    base = ch.eye_y - ch.eye_h - ch.brow_gap - ex.brow_raise
    inner_y, outer_y = base - ex.brow_inner, base + 0.35 * ex.brow_inner
    u = np.linspace(0, 1, 9)
    bx = inner_x + (outer_x - inner_x) * u
    by = inner_y + (outer_y - inner_y) * u - 4 * ex.brow_arch * u * (1 - u)
    cv.line(np.stack([bx, by], 1), look.brow_col, ch.brow_w, joint="curve")
    if ch.glasses:
        cv.line(_arc(side * ch.eye_x + dx, ch.eye_y, ch.eye_w * 1.45, ch.eye_h * 2.3 + 0.04), (35, 35, 40), 0.025)


def _draw_glasses_and_frown(cv: _Canvas, ch: Character, look: _Look) -> None:
    """The glasses' bridge; vertical frown lines between the brows."""
    dx = look.dx
    if ch.glasses:
        cv.line(
            np.array([[-ch.eye_x + ch.eye_w * 1.45 + dx, ch.eye_y], [ch.eye_x - ch.eye_w * 1.45 + dx, ch.eye_y]]),
            (35, 35, 40),
            0.025,
        )
    if look.ex.glabella > 0.3:
        for side in (-1, 1):
            gx = side * 0.05 + dx
            gy = ch.eye_y - ch.eye_h - ch.brow_gap * 0.6
            cv.line(np.array([[gx, gy - 0.11], [gx + side * 0.01, gy]]), look.line_col, 0.016)


def _draw_nose(cv: _Canvas, ch: Character, look: _Look) -> None:
    """The nose, and disgust's wrinkles on its bridge."""
    ny, dx, skin, line_col = ch.nose_y, look.dx, ch.skin, look.line_col
    if ch.nose_style == 0:
        cv.line(_arc(dx, ny - 0.03, 0.06, 0.04, 0.15 * math.pi, 0.85 * math.pi, n=9), line_col, 0.022)
    elif ch.nose_style == 1:
        cv.poly(_arc(dx, ny - 0.04, 0.07, 0.05), _shade(skin, 0.88), line_col, 0.012)
    else:
        cv.poly(np.array([[dx, ny - 0.16], [dx + 0.06, ny], [dx - 0.06, ny]]), _shade(skin, 0.85))
    if look.ex.wrinkles > 0.3:
        for k in range(3):
            wy = ch.eye_y + 0.02 + 0.055 * k
            cv.line(_arc(dx, wy + 0.04, 0.075, 0.04, 1.15 * math.pi, 1.85 * math.pi, n=7), line_col, 0.014)


def _draw_mouth(cv: _Canvas, ch: Character, look: _Look) -> None:
    """Dark opening between the lips with an upper-teeth band and the lip outline, or a closed
    line; smile lines at the corners."""
    ex, skin, line_col = look.ex, ch.skin, look.line_col
    centre, upper, lower = _mouth_curves(ch, ex, look.dx, look.sneer_side)
    lip_col = _shade((int(skin[0] * 0.75 + 160 * 0.25), int(skin[1] * 0.65), int(skin[2] * 0.65)), 0.8)
    gap = lower[:, 1] - upper[:, 1]
    if ex.mouth_open > 0.02 and gap.max() * cv.unit > 1.5 * SUPERSAMPLE:
        cv.poly(np.concatenate([upper, lower[::-1]]), (70, 20, 25))
        if ex.teeth > 0.05:
            band = np.stack([upper[:, 0], np.minimum(upper[:, 1] + ex.teeth * gap.max(), lower[:, 1])], 1)
            cv.poly(np.concatenate([upper, band[::-1]]), (245, 245, 240))
        cv.poly(np.concatenate([upper, lower[::-1]]), None, lip_col, ch.lip_w)
    else:
        cv.line(centre, lip_col, ch.lip_w * (0.8 if ex.mouth_width < 0.9 else 1.0))
    if ex.mouth_curve > 0.05:
        for end in (0, -1):
            px, py = centre[end]
            side = -1 if end == 0 else 1
            cv.line(
                np.array([[px + side * 0.02, py - 0.08], [px + side * 0.05, py], [px + side * 0.02, py + 0.05]]),
                line_col,
                0.012,
            )


def _develop(cv: _Canvas, rng: np.random.Generator, size: int, rgba: bool) -> Image.Image:
    """Down to the output size, then light, blur and noise (the stream's last draws)."""
    img = cv.img.reduce(SUPERSAMPLE)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.BoxBlur(rng.uniform(0.3, 1.0)))  # 3x cheaper than GaussianBlur
    a = np.asarray(img, np.float32)
    xx, yy = _grid(size)
    theta = rng.uniform(0, 2 * math.pi)
    light = rng.uniform(0.75, 1.2) + rng.uniform(0, 0.45) * (xx * math.cos(theta) + yy * math.sin(theta))
    cast = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    oy, ox = rng.integers(0, size, 2)
    noise = _noise_bank(size)[oy : oy + size, ox : ox + size]
    a *= light[..., None] * cast
    a += noise * np.float32(rng.uniform(1.5, 7.0))
    rgb = np.clip(a + 0.5, 0, 255).astype(np.uint8)
    if not rgba:
        return Image.fromarray(rgb, "RGB")
    alpha = np.asarray(cv.mask.reduce(SUPERSAMPLE))
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def _image_rng(seed: int, char: int, expr: int, n: int) -> np.random.Generator:
    return np.random.default_rng([seed, 1, char, expr, n])


def draw_image(seed: int, char: int, expression: str, n: int, size: int = 128) -> Image.Image:
    """Image ``n`` (1-based) of ``expression`` for character ``char`` of the set drawn with ``seed``."""
    return draw_face(
        make_character(seed, char), expression, _image_rng(seed, char, EXPRESSIONS.index(expression), n), size
    )


# ---------------------------------------------------------------------------------------------
# Writing the dataset
# ---------------------------------------------------------------------------------------------


def image_path(out: Path, character: str, expression: str, n: int) -> Path:
    """``OUT/<character>/<character>_<expression>/<character>_<expression>_<n>.png``."""
    folder = f"{character}_{expression}"
    return Path(out) / character / folder / f"{folder}_{n}.png"


_PNG_END = b"IEND\xaeB`\x82"


def _is_whole_png(path: Path) -> bool:
    """True when ``path`` is a PNG that was written to its end (its last chunk is IEND)."""
    try:
        with open(path, "rb") as f:
            f.seek(-len(_PNG_END), os.SEEK_END)
            return f.read() == _PNG_END
    except OSError:
        return False


def _write_one(job: tuple) -> None:
    """Draw one image and write it under a temporary name, then rename it into place.

    A killed run therefore never leaves a partial PNG under a final name. Unlike
    ``grefel.core.io.atomic_path`` there is no fsync per file (it tripled the time per image here): an
    OS crash may leave a truncated file, and a rerun redraws any file that does not end in a whole
    PNG.
    """
    path, seed, char, expression, n, size = job
    buf = io.BytesIO()
    draw_image(seed, char, expression, n, size).save(buf, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _plan(out: Path, characters: int, per_class: int, size: int, seed: int, imbalance: float) -> list[tuple]:
    counts = class_counts(per_class, imbalance)
    jobs = []
    for c, name in enumerate(character_names(characters)):
        for e in EXPRESSIONS:
            jobs += [(image_path(out, name, e, n), seed, c, e, n, size) for n in range(1, counts[e] + 1)]
    return jobs


def _check_out(out: Path, settings: dict) -> bool:
    """Decide what to do with OUT: True to resume an unfinished or complete set of these settings."""
    if out.exists() and not out.is_dir():
        raise GrefelError(f"{out} is a file: give a folder for the synthetic dataset")
    if any(p.is_file() for p in out.parents):
        raise GrefelError(f"{out} lies under a file: give a folder for the synthetic dataset")
    marker = out / SYNTH_MARKER
    if marker.is_file():
        try:
            previous = read_json(marker).get("settings", {})
        except (ValueError, AttributeError):
            raise GrefelError(f"{marker} is unreadable: delete {out} and run `grefel synth` again") from None
        if previous != settings:
            diff = ", ".join(
                f"{k} {previous.get(k)!r} (now {v!r})" for k, v in settings.items() if previous.get(k) != v
            )
            raise GrefelError(
                f"{out} already holds a synthetic set drawn with other settings ({diff}): "
                "choose another folder or delete it"
            )
        return True
    if out.is_dir() and any(out.iterdir()):
        raise GrefelError(f"{out} is not empty and was not written by `grefel synth`: choose a new or empty folder")
    return False


def generate(
    out: str | os.PathLike,
    characters: int = 6,
    per_class: int = 100,
    size: int = 128,
    seed: int = 0,
    imbalance: float = 3.0,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Draw the synthetic FERG-DB-style dataset into ``out`` and return ``out``.

    ``per_class``: images per character of the most frequent expression; ``imbalance``: ratio of
    the most to the least frequent expression (see :func:`class_counts`). Rerunning with the same
    settings resumes a killed run (and does nothing when complete); other settings are refused.
    """
    if not 1 <= characters <= MAX_CHARACTERS:
        raise GrefelError(f"characters must be between 1 and {MAX_CHARACTERS}, got {characters}")
    if per_class < 1:
        raise GrefelError(f"per_class must be at least 1, got {per_class}")
    if not 32 <= size <= 1024:
        raise GrefelError(f"size must be between 32 and 1024 pixels, got {size}")
    if not 1.0 <= imbalance <= 1000.0:
        raise GrefelError(f"imbalance is the most / least frequent class ratio, 1 (balanced) to 1000, got {imbalance}")
    if workers < 1:
        raise GrefelError(f"workers must be at least 1, got {workers}")
    seed = check_seed(seed)
    out = Path(out).expanduser()
    settings = {
        "characters": characters,
        "per_class": per_class,
        "size": size,
        "seed": seed,
        "imbalance": float(imbalance),
    }
    resuming = _check_out(out, settings)
    writable_dir(out, "folder for the synthetic dataset")  # before any drawing
    counts = class_counts(per_class, imbalance)
    marker = {
        "generator": "grefel synth",
        "grefel_version": __version__,
        "layout": "FERG-DB (<character>/<character>_<expression>/<character>_<expression>_<n>.png)",
        "settings": settings,
        "characters": character_names(characters),
        "per_character": counts,
        "images": characters * sum(counts.values()),
        "complete": False,
    }
    try:
        if resuming:
            for stale in out.glob("*/*/.*.tmp"):  # temporary files of a killed run
                stale.unlink(missing_ok=True)
        write_json(out / SYNTH_MARKER, marker)
        jobs = [j for j in _plan(out, characters, per_class, size, seed, imbalance) if not _is_whole_png(j[0])]
        _run(jobs, workers, progress)
        write_json(out / SYNTH_MARKER, {**marker, "complete": True})
    except OSError as e:  # a read-only folder, a full disk, a path through a file
        where = e.filename or out
        raise GrefelError(f"cannot write {where} ({e.strerror or e}): choose a folder you can write to") from None
    if progress:
        _print_summary(out, characters, counts, len(jobs), marker["images"])
    return out


def _print_summary(out: Path, characters: int, counts: dict[str, int], drawn: int, total: int) -> None:
    from rich.table import Table

    console = make_console()
    if not drawn:
        console.print(f"{out} already holds all {total} images of these settings: nothing to draw")
        return
    table = Table(title=f"{total} images, {characters} characters", title_justify="left")
    table.add_column("expression")
    table.add_column("per character", justify="right")
    table.add_column("total", justify="right")
    table.add_column("share", justify="right")
    for e in EXPRESSIONS:
        table.add_row(e, str(counts[e]), str(counts[e] * characters), f"{counts[e] * characters / total:.1%}")
    console.print(table)
    resumed = f" ({total - drawn} were already there)" if drawn < total else ""
    console.print(f"wrote {drawn} images to {out}{resumed}; next: [bold]grefel prepare ferg {out}[/bold]")


def _run(jobs: list[tuple], workers: int, progress: bool) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("drawing faces"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress or not jobs) as bar:
        task = bar.add_task("synth", total=len(jobs), rate="")

        def step(k: int = 1):
            bar.advance(task, k)
            speed = bar.tasks[0].speed
            bar.update(task, rate=f"{speed:.0f} img/s" if speed else "")

        if workers == 1 or len(jobs) < 2 * workers:
            for job in jobs:
                _write_one(job)
                step()
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        chunk = max(1, min(64, len(jobs) // (8 * workers)))
        # spawn, not fork: a fork of a process whose other threads hold locks (torch's or ONNX
        # Runtime's pools, in a notebook or a test session) can leave the children waiting forever
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            for _ in pool.map(_write_one, jobs, chunksize=chunk):
                step()


def sample_sheet(
    path: str | os.PathLike, characters: int = 4, size: int = 96, seed: int = 0, palette: bool = True
) -> Path:
    """A PNG grid: one row per character, one column per expression (image 1 of each), named on top.

    ``palette`` stores it with 256 colours (about 3x smaller, for documentation).
    """
    head = 16
    sheet = Image.new("RGB", (size * len(EXPRESSIONS), head + size * characters), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    for k, e in enumerate(EXPRESSIONS):
        d.text((k * size + size // 2, head // 2), e, fill=(0, 0, 0), anchor="mm")
        for c in range(characters):
            im = draw_image(seed, c, e, 1, size)
            if im.mode == "RGBA":  # as `grefel prepare ferg` shows it: transparent -> white
                im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
            sheet.paste(im.convert("RGB"), (k * size, head + c * size))
    if palette:
        sheet = sheet.quantize(256, method=Image.Quantize.MEDIANCUT)
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    return path
