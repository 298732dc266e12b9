"""Data: reading raw datasets, face alignment, HDF5 shards, splits, label noise, loading."""
