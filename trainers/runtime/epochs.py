"""The old import path of :class:`~trainers.runtime.torchkit.epochs.EpochBook`."""

from trainers.runtime.torchkit.epochs import EpochBook

__all__ = ["EpochBook"]
