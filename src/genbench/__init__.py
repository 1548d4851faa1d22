"""genbench: one honest, reproducible benchmark for the families of generative models."""

__version__ = "0.1.0"
