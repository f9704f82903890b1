"""Which torch device the worker and the command line run on; here, not in the kernel, because it imports torch."""

from __future__ import annotations


def resolve_device(device: str) -> str:
    """Turn the ``device`` setting into a torch device name.

    Args:
        device: ``auto`` (CUDA when this machine has a GPU, else CPU) or an explicit torch device such as ``cuda:1``.
    """
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
