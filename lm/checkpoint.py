"""Orbax checkpoints of a train state (params, optimiser state, step, RNG) plus JSON metadata."""

from pathlib import Path

import jax
import orbax.checkpoint as ocp


def manager(directory, keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                         create=True)
  handlers = {'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_handlers=handlers)


def save(mgr: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
  """Saves ``state`` and ``meta`` as ``step``; orbax declining to (it returns False, e.g. for a step
  at or before the latest one) is an error naming the directory and step, never a silent skip."""
  saved = mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
  if not saved:
    raise ValueError(f'checkpoint {mgr.directory} step {step}: not saved (orbax declined; the latest step there '
                     f'is {mgr.latest_step()})')


def abstract_like(abstract_tree, shardings):
  """ShapeDtypeStructs carrying the shardings that restored arrays should have."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings)


def _path_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', k)))) for k in path)


def check_shapes(mgr: ocp.CheckpointManager, step: int, target, item: str = 'state') -> None:
  """A one-line error naming the first array whose shape differs between checkpoint and target."""
  stored = {_path_name(p): getattr(m, 'shape', None)
            for p, m in jax.tree_util.tree_flatten_with_path(mgr.item_metadata(step)[item])[0]}
  for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]:
    name = _path_name(path)
    if name not in stored:
      raise ValueError(f'checkpoint {mgr.directory} step {step} has no {name}: written by a different model or stage')
    if stored[name] is not None and tuple(stored[name]) != tuple(leaf.shape):
      raise ValueError(f'checkpoint {mgr.directory} step {step}: {name} has shape {tuple(stored[name])} '
                       f'but the model expects {tuple(leaf.shape)} (a checkpoint of a different model shape)')


def restore(mgr: ocp.CheckpointManager, step: int, abstract_state):
  """Restores ``(state, meta)`` at ``step`` onto the shardings in ``abstract_state``."""
  check_shapes(mgr, step, abstract_state)
  out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                  meta=ocp.args.JsonRestore()))
  return out['state'], out['meta']


def restore_params(checkpoint_dir, abstract_params, step: int | None = None):
  """Only the params of a train state (latest step unless given), onto ``abstract_params``'
  shardings: how a stage starts from another stage's checkpoint."""
  mgr = manager(checkpoint_dir)
  step = mgr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {checkpoint_dir}')
  check_shapes(mgr, step, {'params': abstract_params})
  target = {'params': abstract_params}
  restored = ocp.PyTreeCheckpointer().restore(
      Path(mgr.directory) / str(step) / 'state',
      args=ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                                  partial_restore=True))
  mgr.close()
  return restored['params']
