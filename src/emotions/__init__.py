"""Audio-visual emotion analysis of short-form videos."""

__version__ = "0.1.0"
