"""Where models run and where converted models are cached."""

from __future__ import annotations

import os
from pathlib import Path

import torch


class ModelError(ValueError):
    """A model could not be loaded or a model argument is invalid."""


def cache_dir() -> Path:
    """Directory for converted models: ``$REA_CACHE`` or ``~/.cache/rea``."""
    return Path(os.environ.get("REA_CACHE", Path.home() / ".cache" / "rea")).expanduser()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to :class:`torch.device`."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ModelError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device={device!r} asked for CUDA but torch sees no GPU; use device='auto' or 'cpu'")
    return dev
