"""Orbax checkpoints of a train state (params, optimiser state, step, RNG) plus JSON metadata.

A step that cannot be read back (a file of it removed or cut short, its metadata missing) is an
``Unreadable`` error naming its directory; a checkpoint of another model's shapes is a plain
``ValueError`` (a config error: every step of it would fail alike). A save that fails (a full disk)
is ``SaveFailed``. ``lm.train.Guard`` resumes from the newest readable step and sets the bad ones aside.
"""

import errno
from pathlib import Path

import jax
import orbax.checkpoint as ocp

UNFINISHED = '.orbax-checkpoint-tmp'  # orbax writes a step under <step><UNFINISHED>... and renames it when done


class Unreadable(ValueError):
  """A checkpoint step whose files cannot be read back; the message names its directory."""


class SaveFailed(OSError):
  """Writing a checkpoint failed (e.g. no space left); the message names the directory and step."""


def manager(directory, keep: int = 3, async_save: bool = True, create: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                         create=create)
  handlers = {'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_handlers=handlers)


def save(mgr: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
  """Saves ``state`` and ``meta`` as ``step``; orbax declining to (it returns False, e.g. for a step
  at or before the latest one) is an error naming the directory and step, never a silent skip."""
  saved = mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
  if not saved:
    raise ValueError(f'checkpoint {mgr.directory} step {step}: not saved (orbax declined; the latest step there '
                     f'is {mgr.latest_step()})')


def unfinished(directory) -> list[Path]:
  """The step directories of saves that never finished (a run killed or a disk full while saving)."""
  directory = Path(directory)
  return sorted(p for p in directory.glob(f'*{UNFINISHED}*') if p.is_dir()) if directory.is_dir() else []


def step_dir(mgr: ocp.CheckpointManager, step: int) -> Path:
  return Path(mgr.directory) / str(step)


def reason(error: BaseException) -> str:
  """``error`` as a short phrase on one line (orbax and tensorstore messages run to many lines)."""
  if isinstance(error, OSError) and error.errno is not None:
    text = f'{errno.errorcode.get(error.errno, error.errno)}: {error.strerror}'
    text += f' ({error.filename})' if error.filename else ''
  else:
    text = ' '.join(str(error).split())
  return f'{type(error).__name__}: {text[:240]}{"..." if len(text) > 240 else ""}'


def abstract_like(abstract_tree, shardings):
  """ShapeDtypeStructs carrying the shardings that restored arrays should have."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings)


def _path_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', k)))) for k in path)


def _unreadable(mgr, step, error) -> Unreadable:
  return Unreadable(f'checkpoint {step_dir(mgr, step)} is unreadable ({reason(error)})')


def check_shapes(mgr: ocp.CheckpointManager, step: int, target, item: str = 'state') -> None:
  """A one-line error naming the first array whose shape differs between checkpoint and target
  (``Unreadable`` when the step's array metadata cannot be read at all)."""
  try:
    stored_tree = mgr.item_metadata(step)[item]
  except Exception as e:  # noqa: BLE001  (orbax raises what the file system and JSON give it)
    raise _unreadable(mgr, step, e) from e
  if stored_tree is None:
    raise Unreadable(f'checkpoint {step_dir(mgr, step)} is unreadable (its {item} metadata is missing)')
  stored = {_path_name(p): getattr(m, 'shape', None) for p, m in jax.tree_util.tree_flatten_with_path(stored_tree)[0]}
  for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]:
    name = _path_name(path)
    if name not in stored:
      raise ValueError(f'checkpoint {mgr.directory} step {step} has no {name}: written by a different model or stage')
    if stored[name] is not None and tuple(stored[name]) != tuple(leaf.shape):
      raise ValueError(f'checkpoint {mgr.directory} step {step}: {name} has shape {tuple(stored[name])} '
                       f'but the model expects {tuple(leaf.shape)} (a checkpoint of a different model shape)')


def restore(mgr: ocp.CheckpointManager, step: int, abstract_state):
  """Restores ``(state, meta)`` at ``step`` onto the shardings in ``abstract_state``; ``Unreadable``
  when a file of the step is missing or cut short."""
  check_shapes(mgr, step, abstract_state)
  try:
    out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                    meta=ocp.args.JsonRestore()))
  except MemoryError:
    raise
  except Exception as e:  # noqa: BLE001  (tensorstore raises bare Exceptions for a missing or short file)
    raise _unreadable(mgr, step, e) from e
  if not isinstance(out['meta'], dict):
    raise Unreadable(f'checkpoint {step_dir(mgr, step)} is unreadable (its meta is {type(out["meta"]).__name__}, '
                     'not a JSON object)')
  return out['state'], out['meta']


def restore_params(checkpoint_dir, abstract_params, step: int | None = None):
  """Only the params of a train state (latest step unless given), onto ``abstract_params``'
  shardings: how a stage starts from another stage's checkpoint. A finished stage's latest step is
  what its outputs describe, so an unreadable one is an error naming it (never an older step)."""
  mgr = manager(checkpoint_dir, create=False)
  try:
    step = mgr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {checkpoint_dir}')
    target = {'params': abstract_params}
    again = 'run the stage that wrote it again'
    try:
      check_shapes(mgr, step, target)
    except Unreadable as e:
      raise Unreadable(f'{e}; {again}') from e
    try:
      return ocp.PyTreeCheckpointer().restore(
          step_dir(mgr, step) / 'state',
          args=ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                                      partial_restore=True))['params']
    except MemoryError:
      raise
    except Exception as e:  # noqa: BLE001  (tensorstore raises bare Exceptions for a missing or short file)
      raise Unreadable(f'{_unreadable(mgr, step, e)}; {again}') from e
  finally:
    mgr.close()
