"""The bottom layer: errors, files, paths, devices, consoles, settings; no torch at import."""
