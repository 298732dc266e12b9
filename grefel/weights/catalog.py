"""Pretrained weight files grefel knows, as plain data (no torch): their kinds, and where each is published.

Kinds: the encoder's sources (``ir50``, ``mobilefacenet``, ``poster`` for the full preset; ``tiny-encoder``, a
whole tiny-preset encoder from ``grefel pretrain``, for the tiny preset), facexlib's RetinaFace
detectors (``facexlib-resnet50``, ``facexlib-mobile0.25``) and the noisy-label baselines' backbones
(``resnet18``: torchvision-layout ResNet-18 such as ``resnet18_msceleb.pth``; ``resnet18-dream``: DREAM's
``ijba_res18_naive.pth.tar``; ``resnet50-vggface2``: EAC's ``resnet50_ft_weight.pkl``). The files are the
user's: grefel never downloads them, and its messages say where each is published (:data:`PUBLISHED`). One
file ships inside the package (:data:`SHIPPED`): the tiny encoder that ``grefel pretrain`` made from synthetic
faces, the tiny preset's default source; a registered file of its kind takes its place.
:mod:`grefel.weights.store` keeps the registered files; :mod:`grefel.weights.verify` reads them.
"""

from __future__ import annotations

from pathlib import Path

from grefel.data.align import FACEXLIB_NETWORKS

# facexlib's detectors: kind -> (facexlib network name, the file as published)
FACEXLIB_FILES = {
    "facexlib-resnet50": "detection_Resnet50_Final.pth",
    "facexlib-mobile0.25": "detection_mobilenet0.25_Final.pth",
}
FACEXLIB_WEIGHTS = {kind: (FACEXLIB_NETWORKS[kind], name) for kind, name in FACEXLIB_FILES.items()}
FACEXLIB_RELEASE = "https://github.com/xinntao/facexlib/releases/download/v0.1.0/"
HOW_TO_GET = {
    "ir50": "face.evoLVe's backbone_ir50_ms1m_epoch120.pth or POSTER++'s ir50.pth",
    "mobilefacenet": "POSTER++'s mobilefacenet_model_best.pth.tar",
    "poster": "a trained POSTER++ checkpoint (RAF-DB / AffectNet)",
    "tiny-encoder": "the tiny-encoder.pth of `grefel pretrain OUT --encoder-task expression` (grefel ships one)",
}
FACE_EVOLVE_URL = "https://github.com/ZhaoJ9014/face.evoLVe"
POSTER_URL = "https://github.com/Talented-Q/POSTER_V2"
ENCODER_KINDS = ("ir50", "mobilefacenet", "poster", "tiny-encoder")
DETECTOR_KINDS = {kind: network for kind, (network, _) in FACEXLIB_WEIGHTS.items()}  # kind -> facexlib network
# the noisy-label baselines' backbones (grefel.weights.backbones): kind -> the backbone it fills
BACKBONE_KINDS = {"resnet18": "resnet18", "resnet18-dream": "resnet18", "resnet50-vggface2": "resnet50_caffe"}
WEIGHT_KINDS = ENCODER_KINDS + tuple(DETECTOR_KINDS) + tuple(BACKBONE_KINDS)
RUL_URL = "https://github.com/zyh-uaiaaaa/Relative-Uncertainty-Learning"
SCN_URL = "https://github.com/kaiwang960112/Self-Cure-Network"
EAC_URL = "https://github.com/zyh-uaiaaaa/Erasing-Attention-Consistency"
# kind -> (the file as published, where it is published): for messages that say where to get a file
PUBLISHED = {
    "ir50": ("backbone_ir50_ms1m_epoch120.pth (or POSTER++'s ir50.pth)", f"face.evoLVe, {FACE_EVOLVE_URL}"),
    "mobilefacenet": ("mobilefacenet_model_best.pth.tar", f"POSTER++, {POSTER_URL} (models/pretrain)"),
    "poster": ("a trained POSTER++ checkpoint (RAF-DB / AffectNet)", f"POSTER++, {POSTER_URL}"),
    "tiny-encoder": ("tiny-encoder.pth", "shipped with grefel; `grefel pretrain` makes another"),
    **{kind: (name, f"facexlib, {FACEXLIB_RELEASE}{name}") for kind, (_, name) in FACEXLIB_WEIGHTS.items()},
    "resnet18": (
        "resnet18_msceleb.pth (ResNet-18 trained on MS-Celeb-1M)",
        f"the Google Drive link in RUL's README, {RUL_URL} (first shared by amirhfarzaneh/dacl)",
    ),
    "resnet18-dream": (
        "ijba_res18_naive.pth.tar (DREAM's ResNet-18 trained on MS-Celeb-1M)",
        f"the Google Drive folder linked in SCN's README, {SCN_URL}",
    ),
    "resnet50-vggface2": (
        "resnet50_ft_weight.pkl (VGGFace2 ResNet-50: MS-Celeb-1M, fine-tuned on VGGFace2)",
        f"the Google Drive link in EAC's README, {EAC_URL} (converted by cydonia999/VGGFace2-pytorch)",
    ),
}


# preset -> alternative sets of kinds that initialise its whole encoder, the paper's first
PRETRAINED_SOURCES: dict[str, tuple[tuple[str, ...], ...]] = {
    "full": (("ir50", "mobilefacenet"), ("poster",)),
    "tiny": (("tiny-encoder",),),
}
# files inside the package: kind -> the file in grefel/weights/shipped/ (its record: the same name, .json)
SHIPPED_FOLDER = Path(__file__).resolve().parent / "shipped"
SHIPPED = {"tiny-encoder": "tiny-encoder.pth"}
# (method, baseline preset) -> the backbone kinds that initialise it, the paper's first ("*": any baseline method)
BACKBONE_SOURCES: dict[tuple[str, str], tuple[str, ...]] = {
    ("scn", "full"): ("resnet18-dream", "resnet18"),  # SCN's paper: DREAM's MS-Celeb-1M ResNet-18
    ("*", "full"): ("resnet18", "resnet18-dream"),  # RUL, EAC's ResNet-18 runs, the CE baseline: resnet18_msceleb.pth
    ("*", "resnet50"): ("resnet50-vggface2",),  # EAC's repository default
}
