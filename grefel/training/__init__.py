"""Training: settings, the loop, run folders and checkpoints, torchrun, TensorBoard."""
