"""grefel: reproduce, stress-test and extend GReFEL (geometry-aware reliable facial expression learning)."""

__version__ = "0.1.0"
