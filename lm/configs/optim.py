"""Optimiser presets (see ``lm.optim``)."""

import ml_collections


def adamw(lr: float = 3e-4, warmup_steps: int = 100, **overrides) -> ml_collections.ConfigDict:
  cfg = dict(lr=lr, warmup_steps=warmup_steps, min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=1e-8,
             weight_decay=0.1, clip_norm=1.0)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)
