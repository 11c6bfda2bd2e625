"""lightning-probes: PyTorch Lightning callbacks that watch how a network learns."""

__version__ = "0.1.0"
