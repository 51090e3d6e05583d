"""The torch kit: what the torch engines (timm, hf) build on inside a job's child process.

- :mod:`.loop`: :class:`~.loop.TorchTrainer`, the training loop with hooks (device, seed,
  resume, loaders, AMP, epochs, validation, checkpoints, early stop).
- :mod:`.epochs`: :class:`~.epochs.EpochBook`, best / stale tracking and epoch files.
- :mod:`.helpers`: options, checkpoints, device, seeds, AMP, shared classification pieces.
- :mod:`.imagefolder`: the prepared "imagefolder" layout read back (no torch import).

Only job, predict and export children import this: the trainer server never imports torch.
"""
