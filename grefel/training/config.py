"""Every setting of a training run, declared once (``grefel train``'s options are derived from it).

Each field of :class:`TrainConfig` carries its default, help text, help panel, short flag, allowed
range or choices, and whether a resumed run may change it (:mod:`grefel.core.settings`). From these
declarations come the options of ``grefel train`` (``grefel_cli/train.py``), the validation of a
configuration (:meth:`TrainConfig.validate`, called by ``grefel.training.loop.train``), the validation of
a dict of settings such as a study file (:func:`validate_settings`) and the ``grefel train``
arguments of a dict of settings (:func:`train_argv`). Adding a setting is one field here.

Defaults are the paper's recipe (section 4.1 and supplement); docs/training.md gives the source
of each. The module stays light (no torch): the CLI imports it at start-up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from grefel.core import settings
from grefel.core.errors import GrefelError
from grefel.core.recipe import DATA_ON_DEVICE, N_PG, PER_CLASS, PRECISIONS, RELIABILITY, TRAIN_METHODS
from grefel.core.settings import setting
from grefel.training.recipes import RECIPE_FIELDS, method_conflict, recipe_values

PANEL_DATA = "Data and refinement"
PANEL_AUGMENT = "Augmentation (Table 5)"
PANEL_MODEL = "Model and ablations (Tables 2, 6)"
PANEL_LOSS = "Loss (eq. 23; Tables 3, 4, 8)"
PANEL_OPTIMISATION = "Optimisation"
PANEL_RUN = "Run, devices and precision"
PANEL_METHOD = "Method: GReFEL or a noisy-label baseline (EAC, SCN, RUL, CE)"
RECIPE = "[default: the method's recipe"  # help of the settings each method's recipe sets (training.recipes)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile modes
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes that replay CUDA graphs


@dataclass
class TrainConfig:
    """Every setting of a training run (``grefel train``'s options; docs/training.md)."""

    # -- data --------------------------------------------------------------------------------------
    dataset: str | None = setting(
        None, help="Prepared dataset name or folder [default: the only one].", panel=PANEL_DATA, short="-d"
    )
    labels: str | None = setting(
        None, help="Label set from `grefel corrupt` (Table 7) [default: clean].", panel=PANEL_DATA, plain_name=True
    )
    split_set: str | None = setting(
        None,
        help="Split set from `grefel refine` (fold0..fold9 for JAFFE) [default: default, else official].",
        panel=PANEL_DATA,
        plain_name=True,
    )
    refine: bool | None = setting(
        None,
        help=f"Per-epoch data refinement (section 4.1); off: an epoch is a pass over train {RECIPE}: on for "
        "grefel, off for the baselines].",
        panel=PANEL_DATA,
    )
    n_pg: int | None = setting(
        N_PG,
        help="N_pg: at most this many images per video / face group per epoch (0: no cap).",
        panel=PANEL_DATA,
        min=0,
        none_as="0",
    )
    per_class: int = setting(
        PER_CLASS, help="B: images per class per epoch (epoch = B x N_cls images).", panel=PANEL_DATA, min=1
    )
    data_root: str | None = setting(
        None,
        help="Data root [default: $GREFEL_DATA_ROOT, else ~/.local/share/grefel].",
        panel=PANEL_DATA,
        path=True,
        resumable=True,
    )
    # -- augmentation ------------------------------------------------------------------------------
    augment: bool = setting(True, help="Heavy augmentation; off: centre crop only.", panel=PANEL_AUGMENT)
    crop: int = setting(
        112,
        help="Random crop of the stored 128 px face (112 of 128 = the paper's 224 of 256).",
        panel=PANEL_AUGMENT,
        min=1,
    )
    flip: float | None = setting(
        None, help=f"Probability of a horizontal flip {RECIPE}; grefel 0.5].", panel=PANEL_AUGMENT, min=0, max=1
    )
    rotation: float | None = setting(
        None, help=f"Rotation range in degrees (+-) {RECIPE}; grefel 10].", panel=PANEL_AUGMENT, min=0, max=180
    )
    color: float | None = setting(
        None,
        help=f"Brightness / contrast / saturation jitter strength {RECIPE}; grefel 0.2].",
        panel=PANEL_AUGMENT,
        min=0,
        max=1,
    )
    erase: float = setting(0.5, help="Probability of random erasing.", panel=PANEL_AUGMENT, min=0, max=1)
    # -- method ------------------------------------------------------------------------------------
    method: str | None = setting(
        None,
        help="What to train: grefel (the paper), or a published noisy-label method in the same harness: ce "
        "(plain cross-entropy), eac (Zhang et al., ECCV 2022), scn (Wang et al., CVPR 2020), rul (Zhang et al., "
        "NeurIPS 2021) [default: grefel].",
        panel=PANEL_METHOD,
        choices=TRAIN_METHODS,
    )
    backbone_weights: str | None = setting(
        None,
        help="A baseline's pretrained backbone file (MS-Celeb-1M ResNet-18 resnet18_msceleb.pth or "
        "ijba_res18_naive.pth.tar; VGGFace2 ResNet-50 resnet50_ft_weight.pkl) [default: the weights store's].",
        panel=PANEL_METHOD,
        path=True,
    )
    eac_lambda: float = setting(
        5.0, help="EAC: weight lambda of the flip attention-consistency loss.", panel=PANEL_METHOD, min=0
    )
    scn_beta: float = setting(
        0.7,
        help="SCN: share of each batch in the high-importance group (beta).",
        panel=PANEL_METHOD,
        min=0,
        max=1,
        min_open=True,
        max_open=True,
    )
    scn_margin: float = setting(
        0.07,
        help="SCN: rank-regularisation margin delta_1 (the README's 0.07 at batch 64; the paper's 0.15 at 1024).",
        panel=PANEL_METHOD,
        min=0,
    )
    scn_relabel_margin: float = setting(0.2, help="SCN: relabelling margin delta_2.", panel=PANEL_METHOD, min=0, max=1)
    scn_relabel_epoch: int = setting(
        10, help="SCN: first epoch (counted from 1) that relabels.", panel=PANEL_METHOD, min=1
    )
    rul_fc_lr: float = setting(
        10.0,
        help="RUL: learning rate of the classifier, as a multiple of lr.",
        panel=PANEL_METHOD,
        min=0,
        min_open=True,
    )
    # -- model -------------------------------------------------------------------------------------
    preset: str = setting(
        "full",
        help="Model preset: full (the paper's: GReFEL's POSTER++ encoder, a baseline's ResNet-18) or tiny "
        "(CPU-sized); the baselines also take resnet50 (the VGGFace2 ResNet-50).",
        panel=PANEL_MODEL,
    )
    reliability: str = setting(
        "both",
        help="Table 2: both, anchors, mhsa or none (no reliability balancing).",
        panel=PANEL_MODEL,
        choices=RELIABILITY,
    )
    num_anchors: int = setting(10, help="K anchors per class (Table 6).", panel=PANEL_MODEL, short="-K", min=1)
    delta: float | None = setting(
        None,
        help="Anchor similarity temperature delta (eq. 14) [default: the model's, 1.0].",
        panel=PANEL_MODEL,
        min=0,
        min_open=True,
    )
    dropout: float = setting(0.5, help="Dropout of the primary MLP.", panel=PANEL_MODEL, min=0, max=1, max_open=True)
    drop_path: float | None = setting(
        None,
        help="Stochastic depth of the encoder [default: the preset's].",
        panel=PANEL_MODEL,
        min=0,
        max=1,
        max_open=True,
    )
    model_args: dict = setting(
        default_factory=dict,
        help="Further create_model override KEY=JSON, e.g. encoder='{\"depth\": 1}' (repeatable).",
        panel=PANEL_MODEL,
        flag="--model-arg",
    )
    ir50: str | None = setting(
        None, help="IR-50 weight file (face.evoLVe or POSTER++ format).", panel=PANEL_MODEL, path=True
    )
    mobilefacenet: str | None = setting(None, help="MobileFaceNet landmark weight file.", panel=PANEL_MODEL, path=True)
    poster: str | None = setting(
        None, help="Trained POSTER++ checkpoint to start the encoder from.", panel=PANEL_MODEL, path=True
    )
    allow_partial: bool = setting(
        False, help="Accept weight files that cover only part of the model.", panel=PANEL_MODEL
    )
    from_scratch: bool = setting(
        False,
        help="Start from random weights on purpose. The full preset otherwise needs pretrained IR-50 + "
        "MobileFaceNet (or POSTER++) files, given or registered with `grefel weights add`; the tiny preset "
        "starts from the tiny encoder shipped with grefel (or a registered one). From scratch the landmark "
        "stream trains instead of staying frozen.",
        panel=PANEL_MODEL,
    )
    # -- loss (eq. 23) -----------------------------------------------------------------------------
    lambda_cls: float = setting(1.0, help="lambda_cls, class distribution loss (eq. 20).", panel=PANEL_LOSS, min=0)
    lambda_anchor: float = setting(1.0, help="lambda_a, anchor loss (eq. 21).", panel=PANEL_LOSS, min=0)
    lambda_center: float = setting(1.0, help="lambda_c, center loss (eq. 22).", panel=PANEL_LOSS, min=0)
    label_smoothing: float = setting(
        0.11,
        help="Label smoothing eps of eq. 20; Table 8's term T is eps = T/100 (the paper picks T = 11).",
        panel=PANEL_LOSS,
        min=0,
        max=1,
        max_open=True,
    )
    aux_warmup: float = setting(
        0.0,
        help="Epochs over which lambda_a and lambda_c ramp in from 0 (not in the paper; helps from scratch).",
        panel=PANEL_LOSS,
        min=0,
    )
    correction_warmup: float = setting(
        0.0,
        help="Epochs over which eq. 20 moves from the primary to the corrected distribution "
        "(ARBEx's ramp, not in the paper; helps from scratch).",
        panel=PANEL_LOSS,
        min=0,
    )
    # -- optimisation ------------------------------------------------------------------------------
    epochs: int | None = setting(
        None,
        help=f"Epochs {RECIPE}, grefel 1000; with --resume: the run's own].",
        panel=PANEL_OPTIMISATION,
        min=1,
        resumable=True,
    )
    batch_size: int | None = setting(
        None,
        help=f"Global batch size, split over torchrun processes, 2 or more each {RECIPE}; grefel 128].",
        panel=PANEL_OPTIMISATION,
        short="-b",
        min=2,
    )
    lr: float | None = setting(
        None, help=f"Adam learning rate {RECIPE}; grefel 3e-4].", panel=PANEL_OPTIMISATION, min=0, min_open=True
    )
    gamma: float | None = setting(
        None,
        help=f"Exponential learning-rate decay per epoch {RECIPE}; grefel 0.995].",
        panel=PANEL_OPTIMISATION,
        min=0,
        max=1,
        min_open=True,
    )
    weight_decay: float | None = setting(
        None, help=f"Adam weight decay (L2) {RECIPE}; grefel 0].", panel=PANEL_OPTIMISATION, min=0
    )
    seed: int = setting(
        0,
        help="Seed of initialisation, refinement, augmentation and dropout.",
        panel=PANEL_OPTIMISATION,
        min=0,
        max=settings.MAX_SEED,
    )
    # -- machinery ---------------------------------------------------------------------------------
    device: str = setting(
        "auto",
        help="auto, cpu, cuda or cuda:N (torchrun sets one GPU per process).",
        panel=PANEL_RUN,
        pattern=r"auto|cpu|cuda(:\d+)?",
        resumable=True,
    )
    precision: str = setting(
        "auto",
        help="auto (bf16 on GPUs, fp16 + scaler without bf16, fp32 on CPU), bf16, fp16, fp32.",
        panel=PANEL_RUN,
        choices=PRECISIONS,
    )
    compile: bool = setting(False, help="torch.compile the model.", panel=PANEL_RUN, resumable=True)
    compile_mode: str = setting(
        "default",
        help="torch.compile mode when compile is on (reduce-overhead and max-autotune replay CUDA graphs).",
        panel=PANEL_RUN,
        choices=COMPILE_MODES,
        resumable=True,
    )
    channels_last: bool = setting(
        False, help="Channels-last memory format (faster convolutions on GPUs).", panel=PANEL_RUN
    )
    freeze_bn: bool = setting(
        False, help="BatchNorm layers keep their running statistics (no update).", panel=PANEL_RUN
    )
    sync_bn: bool = setting(True, help="SyncBatchNorm when training on several GPUs.", panel=PANEL_RUN)
    deterministic: bool = setting(  # kept from the run on resume: its resumes must match
        False, help="Deterministic kernels: bit-identical reruns and resumes (slower).", panel=PANEL_RUN
    )
    workers: int = setting(
        4, help="Data-loading processes per training process.", panel=PANEL_RUN, short="-j", min=0, resumable=True
    )
    data_on_device: str = setting(
        "auto",
        help="Hold the train and validation faces on the training device and gather batches there (no "
        "loader workers); auto: on a GPU when they take at most a quarter of its free memory, off on the CPU.",
        panel=PANEL_RUN,
        choices=DATA_ON_DEVICE,
        resumable=True,
    )
    eval_batch_size: int | None = setting(
        None,
        help="Validation batch per process [default: 2 x the training batch].",
        panel=PANEL_RUN,
        min=1,
        resumable=True,
    )
    log_every: int = setting(
        10, help="Steps between live-view updates (and NaN checks).", panel=PANEL_RUN, min=1, resumable=True
    )
    val_every: int = setting(1, help="Validate every N epochs (and after the last).", panel=PANEL_RUN, min=1)
    tensorboard: bool = setting(
        True,
        help="TensorBoard event files in the run folder (needs the tensorboard package; skipped without it).",
        panel=PANEL_RUN,
        resumable=True,
    )
    confusion_every: int = setting(
        10,
        help="Epochs between validation confusion-matrix images in TensorBoard (and after the last).",
        panel=PANEL_RUN,
        min=1,
        resumable=True,
    )
    save_every: int = setting(
        1,
        help="Write last.pt every N epochs (and after the last); best.pt whenever it improves.",
        panel=PANEL_RUN,
        min=1,
        resumable=True,
    )
    run_dir: str | None = setting(
        None, help="Folder that holds run folders [default: ./runs].", panel=PANEL_RUN, path=True
    )
    name: str | None = setting(
        None,
        help="Run folder name [default: the dataset, preset, label set and start time joined by dashes].",
        panel=PANEL_RUN,
        plain_name=True,
    )
    resume: str | None = setting(
        None,
        help="Run folder (or its last.pt) to continue; its settings are reused.",
        panel=PANEL_RUN,
        path=True,
        resumable=True,
    )
    stop_after: int | None = setting(
        None,
        help="Stop after this many epochs in this session (continue later with --resume).",
        panel=PANEL_RUN,
        min=1,
        resumable=True,
    )
    quiet: bool = setting(False, help="No live view.", panel=PANEL_RUN, short="-q", resumable=True)

    def validate(self) -> None:
        """Raise a one-line GrefelError naming the first setting outside its declared type or range, or
        set for a method that does not use it."""
        values = asdict(self)
        validate_settings(values)
        why = method_conflict(values, defaults())
        if why:
            raise GrefelError(why)


def defaults() -> dict[str, Any]:
    """Every setting's declared default (None: the method's recipe, :func:`with_recipe`)."""
    return {name: settings.default_of(f) for name, (f, _, _, _) in settings.specs(TrainConfig).items()}


def with_recipe(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its method named (grefel when unset) and every recipe setting left unset (None)
    taken from that method's recipe on its preset (:mod:`grefel.training.recipes`)."""
    method = cfg.method or "grefel"
    recipe = recipe_values(method, cfg.preset)
    unset = {k: recipe[k] for k in RECIPE_FIELDS if getattr(cfg, k) is None}
    return dataclasses.replace(cfg, method=method, **unset)


def resumable_settings() -> tuple[str, ...]:
    """The settings a resumed run may change; every other one comes from the run's checkpoint."""
    return tuple(name for name, (_, spec, _, _) in settings.specs(TrainConfig).items() if spec.resumable)


def validate_settings(values: Mapping[str, Any]) -> None:
    """Check a dict of training settings (keys: TrainConfig field names) against their declarations.

    Raises a one-line GrefelError naming the first unknown key (with the nearest known one), the
    first value outside its type, range or choices, or a compile_mode set without compile.
    """
    settings.validate(TrainConfig, values, what="training setting")
    mode = values.get("compile_mode", "default")
    if mode != "default" and not values.get("compile", False):
        raise GrefelError(
            f"training setting 'compile_mode' ({mode}) takes effect only with compile on: "
            "turn compile on, or leave compile_mode at default"
        )


def train_argv(values: Mapping[str, Any]) -> list[str]:
    """The ``grefel train`` arguments that give exactly these settings (validated first).

    ``train_argv({"dataset": "rafdb", "num_anchors": 4, "augment": False})`` is
    ``["--dataset", "rafdb", "--num-anchors", "4", "--no-augment"]``.
    """
    validate_settings(values)
    return settings.to_argv(TrainConfig, values)


# -- grefel pretrain ---------------------------------------------------------------------------------
PANEL_FACES = "Pretraining faces"
PANEL_STAGE1 = "Stage 1: the two streams"
PANEL_STAGE2 = "Stage 2: the whole encoder"
PRETRAIN_IR_TASKS = ("identity", "expression", "both")
PRETRAIN_ENCODER_TASKS = ("none", "expression", "identity")


@dataclass
class PretrainConfig:
    """Every setting of ``grefel pretrain`` (defaults: the recipe of docs/pretrain.md, which made the
    shipped weights with ``encoder_task="expression"``)."""

    seed: int = setting(
        1000, help="Synthesis seed of the pretraining faces (the demo's data use seed 0).", panel=PANEL_FACES, min=0
    )
    characters: int = setting(  # at most grefel.synth.faces.MAX_CHARACTERS (a light module reads no synth)
        600, help="Identities to learn (one synthesis seed has 702).", panel=PANEL_FACES, min=2, max=702
    )
    per_expression: int = setting(4, help="Images per character and expression.", panel=PANEL_FACES, min=1)
    draw_size: int = setting(128, help="Side the faces are drawn at (the demo's).", panel=PANEL_FACES, min=16)
    store: int = setting(
        56,
        help="Side the drawn faces are kept at; training sees random input-size windows of them "
        "(48 of 56 = the recipe's 112 of 128).",
        panel=PANEL_FACES,
        min=8,
    )
    input_size: int = setting(48, help="Side of the network input (the tiny preset's).", panel=PANEL_FACES, min=8)
    val_per_character: int = setting(
        2, help="Images per character held out to validate the pretext tasks.", panel=PANEL_FACES, min=1
    )
    cache: str | None = setting(
        None, help=".npz of the drawn faces, reused when its settings match.", panel=PANEL_FACES, path=True
    )
    epochs: int = setting(12, help="Epochs of stage 1.", panel=PANEL_STAGE1, min=1)
    batch_size: int = setting(128, help="Batch size (both stages).", panel=PANEL_STAGE1, short="-b", min=2)
    lr: float = setting(
        2e-3, help="AdamW learning rate of stage 1 (cosine decay, half an epoch of warm-up).", panel=PANEL_STAGE1, min=0
    )
    weight_decay: float = setting(5e-4, help="AdamW weight decay (both stages).", panel=PANEL_STAGE1, min=0)
    ir_task: str = setting(
        "identity",
        help="Pretext of the image stream: identity (the analogue of IR-50's face recognition), expression, both.",
        panel=PANEL_STAGE1,
        choices=PRETRAIN_IR_TASKS,
    )
    embed_dim: int = setting(64, help="Width of the image stream's pretext embedding.", panel=PANEL_STAGE1, min=2)
    margin: float = setting(0.35, help="CosFace margin m.", panel=PANEL_STAGE1, min=0)
    scale: float = setting(30.0, help="CosFace scale s.", panel=PANEL_STAGE1, min=0, min_open=True)
    streams: str | None = setting(
        None,
        help="Folder holding stage 1's tiny-ir.pth and tiny-mobilefacenet.pth: start from them and skip stage 1.",
        panel=PANEL_STAGE1,
        path=True,
    )
    encoder_task: str = setting(
        "none",
        help="Stage 2: train the whole tiny encoder on the pretraining faces' expression or identity and write "
        "tiny-encoder.pth (what the tiny preset starts from); none: skip.",
        panel=PANEL_STAGE2,
        choices=PRETRAIN_ENCODER_TASKS,
    )
    encoder_epochs: int = setting(8, help="Epochs of stage 2.", panel=PANEL_STAGE2, min=1)
    encoder_lr: float = setting(1e-3, help="AdamW learning rate of stage 2.", panel=PANEL_STAGE2, min=0)
    train_seed: int = setting(0, help="Seed of initialisation, batches and augmentation.", panel=PANEL_RUN, min=0)
    workers: int = setting(1, help="Drawing processes.", panel=PANEL_RUN, min=1)
    threads: int = setting(1, help="Torch threads while training.", panel=PANEL_RUN, min=1)

    def validate(self) -> None:
        """Raise a one-line GrefelError naming the first setting outside its declared type or range, or
        settings that do not fit together."""
        settings.validate(PretrainConfig, asdict(self), what="pretraining setting")
        if self.val_per_character >= 7 * self.per_expression:
            raise GrefelError(
                f"val_per_character ({self.val_per_character}) must leave training images of every character: "
                f"at most {7 * self.per_expression - 1} with per_expression {self.per_expression}"
            )
        if self.input_size > self.store:
            raise GrefelError(f"input_size ({self.input_size}) must not exceed store ({self.store})")
