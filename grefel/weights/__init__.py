"""Pretrained weight files: what is published (catalog), the store, checks against the model."""
