"""Constants of the paper's recipe, and the choices of training settings, that several layers share.

Kept in a module without heavy imports: the training settings (``grefel.training.config``), which
the CLI reads at start-up, the data refinement (``grefel.data.refine``) and the model
(``grefel.models.grefel``) all take them from here, so each is declared once.
"""

N_PG = 512  # images per video / face group and epoch (section 4.1)
PER_CLASS = 500  # B, images per expression per epoch (section 4.1)
DEFAULT_EPOCHS = 1000  # section 4.1
RELIABILITY = ("both", "anchors", "mhsa", "none")  # reliability balancing setups (Table 2)
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # training precision (not in the paper)
DATA_ON_DEVICE = ("auto", "on", "off")  # faces held on the training device (grefel.data.resident)
TRAIN_METHODS = ("grefel", "ce", "eac", "scn", "rul")  # training methods: GReFEL and the noisy-label baselines
BASELINE_PRESETS = ("full", "resnet50", "tiny")  # backbones of the baselines (grefel.models.resnets)
