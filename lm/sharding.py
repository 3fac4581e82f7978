"""The device mesh, logical axis rules, sharded init, batch placement and multi-host start-up.

Mesh axes are ``('data', 'fsdp', 'tensor')``. Params and activations carry logical axis names
(see ``lm.model``); one rules table maps them to mesh axes, so a new layout is a config change.
"""

import contextlib
import glob
import math
import os

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')

# Batch over data x fsdp; params over fsdp (ZeRO-3 style) and tensor (heads, MLP, vocab).
DEFAULT_RULES = (
    ('batch', ('data', 'fsdp')),
    ('length', None),
    ('vocab', 'tensor'),
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('kv_heads', 'tensor'),
    ('head_dim', None),
    ('qkv', None),
    ('gate_up', None),
    ('norm', None),
    ('layers', None),
    ('act_embed', None),
    ('act_mlp', 'tensor'),
    ('act_kv_heads', 'tensor'),
    ('act_vocab', 'tensor'),
)


# PCI device ids of Google TPUs (v3, v4, v5p, v5e, v6e, 7x), as jax's own hardware check lists them
TPU_PCI_DEVICE_IDS = ('0x0027', '0x0056', '0x005e', '0x0062', '0x0063', '0x006f', '0x0076')


def on_cloud_tpu_vm() -> bool:
  """True on a Cloud TPU VM: a Google TPU among the PCI devices (read before jax starts a backend)."""
  for device in glob.glob('/sys/bus/pci/devices/*'):
    try:
      with open(f'{device}/vendor') as v, open(f'{device}/device') as d:
        if v.read().strip() == '0x1ae0' and d.read().strip() in TPU_PCI_DEVICE_IDS:
          return True
    except OSError:
      pass
  return False


def maybe_initialize_distributed(cfg=None):
  """``jax.distributed.initialize()`` when several processes run (TPU pods, or explicit settings).

  ``cfg`` may hold ``coordinator_address``, ``num_processes`` and ``process_id``; on TPU VMs (every
  worker of a slice, found from the VM's metadata) and on GKE jax finds them itself. Initialising
  on a TPU VM also starts jax's preemption service, through which all hosts stop at one step.
  """
  if jax.distributed.is_initialized():
    return
  cfg = dict(cfg or {})
  explicit = {k: v for k, v in cfg.items() if v not in (None, '', -1)}
  if explicit.get('num_processes', 1) > 1:
    jax.distributed.initialize(**explicit)
  elif any(v in os.environ for v in ('TPU_WORKER_HOSTNAMES', 'MEGASCALE_COORDINATOR_ADDRESS')) or on_cloud_tpu_vm():
    jax.distributed.initialize()


def mesh_shape(shape, n_devices: int) -> tuple[int, ...]:
  """Resolves one ``-1`` in ``shape`` to "the rest" and checks the product against the devices."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f'mesh.shape={shape} needs {len(MESH_AXES)} entries for axes {MESH_AXES}')
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f'mesh.shape={shape}: sizes must be positive, with at most one -1')
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if n_devices % known:
      raise ValueError(f'mesh.shape={shape} does not fit {n_devices} devices '
                       f'({n_devices} is not a multiple of {known})')
    shape = tuple(n_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != n_devices:
    raise ValueError(f'mesh.shape={shape} uses {math.prod(shape)} devices but {n_devices} are present')
  return shape


def make_mesh(shape=(-1, 1, 1), devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(shape, len(devices))
  device_grid = np.asarray(devices).reshape(shape)
  return Mesh(device_grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def rules_from_config(rules) -> tuple:
  """Config rules (a sequence of ``(logical, mesh axis or axes or None)``) as flax wants them."""
  out = []
  for logical, mesh_axes in rules:
    if isinstance(mesh_axes, list):
      mesh_axes = tuple(mesh_axes)
    for axis in (mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,)):
      if axis is not None and axis not in MESH_AXES:
        raise ValueError(f'sharding rule {logical!r} -> {axis!r}: mesh axes are {MESH_AXES}')
    out.append((logical, mesh_axes))
  return tuple(out)


def logical_shardings(abstract_boxed_tree, mesh: Mesh, rules):
  """NamedShardings for a tree of (abstract) ``nn.LogicallyPartitioned`` leaves."""
  specs = nn.get_partition_spec(abstract_boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules):
  """Mesh and logical rules for tracing: activation constraints apply only inside this.

  (``jax.set_mesh``, not the legacy ``with mesh:``, under which Linen's constraints are no-ops.)
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def sharded_init(init_fn, mesh: Mesh, rules, *args):
  """Runs ``init_fn(*args)`` (which returns boxed params) straight into its shardings.

  ``eval_shape`` gives the boxed abstract tree, the rules give the shardings, and ``jit`` with
  ``out_shardings`` creates every param on its devices. Returns ``(params, shardings)``, unboxed.
  """
  abstract = jax.eval_shape(init_fn, *args)
  shardings = nn.unbox(logical_shardings(abstract, mesh, rules))
  with use_mesh(mesh, rules):
    params = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)(*args)
  return params, shardings


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading axis over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(('data', 'fsdp'), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def host_batch_slice(global_batch_size: int) -> slice:
  """The rows of the global batch that this process feeds."""
  n, i = jax.process_count(), jax.process_index()
  if global_batch_size % n:
    raise ValueError(f'global batch size {global_batch_size} is not divisible by {n} processes')
  per_host = global_batch_size // n
  return slice(i * per_host, (i + 1) * per_host)


def place_batch(host_batch: dict, mesh: Mesh) -> dict:
  """Global arrays from each process's local rows (``host_batch_slice`` of the global batch)."""
  return {
      k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), np.asarray(v))
      for k, v in host_batch.items()
  }
