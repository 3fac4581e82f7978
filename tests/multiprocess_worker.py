"""One process of a two-process CPU job for tests/test_multiprocess.py.

``python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT LOCAL_DEVICES BATCH.npz``

Joins ``jax.distributed`` (coordinator 127.0.0.1:PORT) when NUM_PROCESSES > 1, builds the
(2, 2, 2) mesh over all global devices, inits sharded params, feeds this process's rows of the
global batch (``host_batch_slice`` + ``place_batch``), takes one train step and prints one line
``RESULT {json}`` with numbers every process can read (replicated reductions).
The test imports ``one_step`` to compute the same numbers in a single 8-device process.

``python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT LOCAL_DEVICES train WORKDIR STEPS``
runs ``lm.train.run`` instead (``train_run``: a small model on packed documents, one metrics line per
step, each batch paced by ``PACE_S`` so that a test can signal a process mid-run) and prints
``RESULT {"status": "done" | "preempted", "step": the last checkpoint's step}``.
"""

import json
import os
import re
import sys

MESH_SHAPE = (2, 2, 2)


def one_step(global_batch: dict) -> dict:
  import jax
  import jax.numpy as jnp
  from test_sharding import setup

  from lm import sharding as shd
  from lm.model.transformer import ModelConfig

  config = ModelConfig(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128, max_seq_len=64)
  mesh = shd.make_mesh(MESH_SHAPE)  # all global devices
  state, step = setup(config, mesh)
  rows = shd.host_batch_slice(len(global_batch['inputs']))
  batch = shd.place_batch({k: v[rows] for k, v in global_batch.items()}, mesh)
  with shd.use_mesh(mesh, shd.DEFAULT_RULES):
    new_state, metrics, grads = step(state, batch)

  @jax.jit
  def summaries(old, new, grads):
    leaf = lambda f, *ts: [f(*xs) for xs in zip(*map(jax.tree.leaves, ts))]
    return {'param_sum': leaf(jnp.sum, new), 'update_abs_sum': leaf(lambda a, b: jnp.sum(jnp.abs(a - b)), old, new),
            'grad_sum': leaf(jnp.sum, grads), 'grad_sq_sum': leaf(lambda g: jnp.sum(g * g), grads)}

  out = summaries(state['params'], new_state['params'], grads)
  to_float = lambda x: float(jax.device_get(x))  # replicated scalars: readable on every process
  result = {k: [to_float(x) for x in v] for k, v in out.items()}
  result.update({k: to_float(metrics[k]) for k in ('loss', 'grad_norm', 'weight')})
  result.update(process_index=jax.process_index(), process_count=jax.process_count(),
                global_devices=jax.device_count(), local_devices=jax.local_device_count(), rows=[rows.start, rows.stop])
  return result


PACE_S = 0.05  # seconds per batch in train_run


class PacedBatches:
  """``lm.data.pipeline.Batches`` that take ``PACE_S`` per batch."""

  def __init__(self, batches):
    self.batches = batches

  def host_batch(self, i, host_slice=slice(None)):
    import time
    time.sleep(PACE_S)
    return self.batches.host_batch(i, host_slice)


def train_run(workdir: str, steps: int) -> dict:
  """``lm.train.run`` of a small model on packed random documents, on the (2, 2, 2) mesh over all
  global devices; every process calls it the same way."""
  import jax
  import ml_collections
  import numpy as np

  from lm import checkpoint, train
  from lm import sharding as shd
  from lm.configs import optim
  from lm.data import pipeline
  from lm.model.transformer import ModelConfig, Transformer
  from lm.steps import lm as lm_steps

  rng = np.random.default_rng(0)  # documents that count up from a random start: learnable in a few steps
  docs = [(int(rng.integers(0, 125)) + np.arange(int(rng.integers(4, 40)))) % 125 + 3 for _ in range(200)]
  rows = pipeline.pack(docs, 16, eos_id=2)
  model = Transformer(ModelConfig(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128,
                                  max_seq_len=64))
  init_params = lambda rng: model.init(rng, np.zeros((1, 8), np.int32))['params']  # noqa: E731
  task = train.Task(name='pretrain', init_params=init_params, loss_sums=lm_steps.make_loss_sums(model),
                    train_batches=PacedBatches(pipeline.Batches(rows, 16, seed=0)), weight_name='tokens')
  cfg = ml_collections.ConfigDict(dict(
      steps=steps, batch_size=16, microbatches=1, log_every=1, eval_every=10 ** 6, checkpoint_every=10 ** 6,
      keep_checkpoints=2, optim=optim.adamw(1e-2, 2)))
  mesh = shd.make_mesh(MESH_SHAPE)
  try:
    train.run(task, cfg, workdir, mesh, shd.DEFAULT_RULES)
    status = 'done'
  except train.Preempted:
    status = 'preempted'
  mgr = checkpoint.manager(f'{workdir}/pretrain/checkpoints')
  return {'status': status, 'step': mgr.latest_step(), 'process_index': jax.process_index()}


def main():
  process_id, num_processes, port, local_devices = map(int, sys.argv[1:5])
  flags = re.sub(r'--xla_force_host_platform_device_count=\S*', '', os.environ.get('XLA_FLAGS', ''))
  os.environ['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count={local_devices}'
  os.environ['JAX_PLATFORMS'] = 'cpu'
  import jax
  import numpy as np
  if num_processes > 1:
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=num_processes,
                               process_id=process_id, initialization_timeout=120)
  if sys.argv[5] == 'train':
    result = train_run(sys.argv[6], int(sys.argv[7]))
  else:
    with np.load(sys.argv[5]) as f:
      global_batch = dict(f)
    result = one_step(global_batch)
  print('RESULT ' + json.dumps(result), flush=True)
  if num_processes > 1:
    jax.distributed.shutdown()


if __name__ == '__main__':
  main()
