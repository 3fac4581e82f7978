"""Optimiser from config: AdamW, linear warmup + cosine decay, global-norm clipping.

Weight decay skips norms, embeddings, biases and scalar heads (by param name).
"""

import jax
import optax

NO_DECAY_NAMES = ('norm', 'embed', 'bias', 'scalar_head')


def decay_mask(params):
  def keep(path, _):
    names = '/'.join(str(getattr(k, 'key', k)) for k in path)
    return not any(n in names for n in NO_DECAY_NAMES)
  return jax.tree_util.tree_map_with_path(keep, params)


def make_schedule(cfg, total_steps: int):
  warmup = min(int(cfg.warmup_steps), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=cfg.lr * cfg.min_lr_ratio)


def make_optimizer(cfg, total_steps: int):
  """Returns ``(tx, schedule)`` for an ``optim`` config section."""
  schedule = make_schedule(cfg, total_steps)
  tx = optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm > 0 else optax.identity(),
      optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask),
  )
  return tx, schedule
