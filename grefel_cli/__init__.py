"""The `grefel` command line: a thin Typer layer over the grefel library."""
