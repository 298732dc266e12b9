"""Synthetic faces in the FERG-DB layout (the demo's data); below the model."""
