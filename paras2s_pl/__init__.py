"""ParaS2S: benchmark and align speech-to-speech models to how things are said."""

__version__ = "0.1.0"
