"""Orbax checkpoints of a train state (params, optimiser state, step, RNG) plus JSON metadata."""

from pathlib import Path

import jax
import orbax.checkpoint as ocp


def manager(directory, keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                         create=True)
  return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_names=('state', 'meta'))


def save(mgr: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
  mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))


def abstract_like(abstract_tree, shardings):
  """ShapeDtypeStructs carrying the shardings that restored arrays should have."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings)


def check_shapes(mgr: ocp.CheckpointManager, step: int, target, item: str = 'state') -> None:
  """A one-line error naming the first array whose shape differs between checkpoint and target."""
  stored = mgr.item_metadata(step)[item]
  flat_stored = {jax.tree_util.keystr(p): getattr(m, 'shape', None)
                 for p, m in jax.tree_util.tree_flatten_with_path(stored)[0]}
  for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]:
    key = jax.tree_util.keystr(path)
    if key not in flat_stored:
      raise ValueError(f'checkpoint {mgr.directory} step {step} has no {item}{key}: it was written by a different model or stage')
    if flat_stored[key] is not None and tuple(flat_stored[key]) != tuple(leaf.shape):
      raise ValueError(f'checkpoint {mgr.directory} step {step}: {item}{key} has shape {tuple(flat_stored[key])} '
                       f'but the model expects {tuple(leaf.shape)} (a checkpoint of a different model shape)')


def restore(mgr: ocp.CheckpointManager, step: int, abstract_state):
  """Restores ``(state, meta)`` at ``step`` onto the shardings in ``abstract_state``."""
  check_shapes(mgr, step, abstract_state)
  out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                  meta=ocp.args.JsonRestore()))
  return out['state'], out['meta']
