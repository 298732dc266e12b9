"""Evaluation: a checkpoint over a split, the predictions file, metrics, video scoring."""
