"""Constants of the paper's recipe that several layers share (section 4.1; Tables 2 and 6).

Kept in a module without heavy imports: the training settings (``grefel.training.config``), which
the CLI reads at start-up, the data refinement (``grefel.data.refine``) and the model
(``grefel.models.grefel``) all take them from here, so each is declared once.
"""

N_PG = 512  # images per video / face group and epoch (section 4.1)
PER_CLASS = 500  # B, images per expression per epoch (section 4.1)
DEFAULT_EPOCHS = 1000  # section 4.1
RELIABILITY = ("both", "anchors", "mhsa", "none")  # reliability balancing setups (Table 2)
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # training precision (not in the paper)
