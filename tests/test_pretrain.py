"""Synthetic landmarks (grefel.synth.landmarks) and `grefel pretrain` (grefel.training.pretrain)."""

from __future__ import annotations

import numpy as np
import pytest

from grefel.core.io import sha256_file
from grefel.synth import faces as synth
from grefel.synth.landmarks import FLIP_PERMUTATION, LANDMARKS, draw_with_landmarks, landmarks


def test_images_unchanged_and_landmarks_in_frame():
    for c, e, n in [(0, "joy", 1), (1, "surprise", 3), (2, "disgust", 2)]:
        img, lm = draw_with_landmarks(0, c, e, n, 128)
        assert np.array_equal(np.asarray(img), np.asarray(synth.draw_image(0, c, e, n, 128)))
        assert lm.shape == (len(LANDMARKS), 2)
        assert (lm > 0).all() and (lm < 127).all()
        assert np.allclose(landmarks(0, c, e, n, 64), (lm + 0.5) * 0.5 - 0.5, atol=1e-9)  # scales with the size


def test_landmark_layout():
    """Top to bottom: brows, eyes, nose, mouth, chin (in the face's own frame); left points left of right ones."""
    for n in range(1, 6):
        lm = landmarks(3, 1, "neutral", n, 128)
        i = {name: k for k, name in enumerate(LANDMARKS)}
        # undo the image's rotation with the line through the outer eye corners
        d = lm[i["eye_r_outer"]] - lm[i["eye_l_outer"]]
        a = -np.arctan2(d[1], d[0])
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        p = lm @ rot.T
        y = {name: p[k, 1] for name, k in i.items()}
        assert y["brow_l_mid"] < y["eye_l_upper"] < y["eye_l_lower"] < y["nose_tip"] < y["mouth_upper"]
        assert y["mouth_lower"] < y["chin"]
        assert p[i["eye_l_outer"], 0] < p[i["eye_l_inner"], 0] < p[i["eye_r_inner"], 0] < p[i["eye_r_outer"], 0]
        assert p[i["mouth_l"], 0] < p[i["mouth_r"], 0]


def test_flip_permutation_is_a_mirror_pairing():
    perm = np.array(FLIP_PERMUTATION)
    assert (perm[perm] == np.arange(len(perm))).all()
    swap = {"l": "r", "r": "l"}
    for k, name in enumerate(LANDMARKS):
        parts = name.split("_")
        assert LANDMARKS[perm[k]] == "_".join(swap.get(w, w) for w in parts)


def test_expression_moves_the_landmarks():
    """Surprise opens the eyes and raises the brows against neutral, on the same character and pose."""
    i = {name: k for k, name in enumerate(LANDMARKS)}
    opening = {}
    for e in ("neutral", "surprise"):
        lm = np.stack([landmarks(0, 0, e, n, 128) for n in range(1, 9)])
        opening[e] = np.linalg.norm(lm[:, i["eye_l_lower"]] - lm[:, i["eye_l_upper"]], axis=1).mean()
    assert opening["surprise"] > 1.3 * opening["neutral"]


def test_pretraining_characters_are_not_the_demos():
    from grefel.training.pretrain import check_disjoint

    assert check_disjoint(1000, 50, 0, 6) > 0.05


@pytest.mark.slow
def test_pretrain_writes_weights_the_tiny_preset_loads(tmp_path):
    import torch

    from grefel.models.grefel import create_model
    from grefel.training.pretrain import PretrainConfig, pretrain, shipping_record
    from grefel.weights.verify import load_pretrained

    torch.set_num_threads(1)
    cfg = PretrainConfig(
        characters=6,
        per_expression=1,
        epochs=1,
        batch_size=8,
        val_per_character=1,
        encoder_task="expression",
        encoder_epochs=1,
    )
    res = pretrain(tmp_path / "a", cfg, progress=False)
    m = create_model("tiny", 7, encoder={"freeze_landmarks": True})
    rep = load_pretrained(m, ir50=res.ir_path, mobilefacenet=res.mfn_path)
    assert all(s.complete for s in rep.sources)
    assert all("output_layer" in k for s in rep.sources for k in s.unused)  # the pretext heads: never run
    rep = load_pretrained(m, tiny_encoder=res.folder / "tiny-encoder.pth")
    assert rep.sources[0].complete and rep.sources[0].kind == "tiny-encoder"
    record = shipping_record(res.folder, "grefel pretrain a --characters 6")
    assert record["sha256"] == sha256_file(res.folder / "tiny-encoder.pth")
    assert record["synthesis_seed"] == 1000 and "out" not in record["settings"]
    again = pretrain(tmp_path / "b", cfg, progress=False)
    assert again.metrics["files"] == res.metrics["files"]  # same settings, same bytes
