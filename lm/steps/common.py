"""What every objective's train step shares: gradient accumulation, the optimiser update, metrics.

An objective is ``loss_sums(params, batch, rng) -> (objective_sum, sums)`` where ``sums`` holds
per-batch sums of whatever it reports, including ``weight``: the normaliser (tokens, pairs, ...).
The step divides by the total weight after summing over microbatches, so accumulation over
microbatches gives the same update as one big batch. ``init_state`` is the one train state that
``lm.train`` and ``lm.rl.learner`` step.
"""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


def init_state(params, tx, rng=None) -> dict:
  """The train state every loop steps (supervised and RL): ``step`` 0, ``params``, the optimiser's
  state, and the step's RNG as key data (``fold_in(rng, 1)``; ``rng`` defaults to ``key(0)``)."""
  rng = jax.random.key(0) if rng is None else rng
  return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': tx.init(params),
          'rng': jax.random.key_data(jax.random.fold_in(rng, 1))}


def _split_microbatches(batch, n: int):
  """[B, ...] -> [n, B/n, ...], micro j taking rows j, n+j, ... so each stays spread over devices."""
  def split(x):
    if x.shape[0] % n:
      raise ValueError(f'batch size {x.shape[0]} is not divisible by microbatches={n}')
    x = x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1)
    return nn.with_logical_constraint(x, (None, 'batch') + (None,) * (x.ndim - 2))
  return jax.tree.map(split, batch)


def accumulate(loss_sums: Callable, params, batch, rng, microbatches: int = 1):
  """Sum of gradients and of ``sums`` over microbatches (scanned, so memory is one microbatch's)."""
  grad_fn = jax.grad(loss_sums, has_aux=True)
  if microbatches == 1:
    return grad_fn(params, batch, rng)
  micro = _split_microbatches(batch, microbatches)
  rngs = jax.random.split(rng, microbatches)

  def body(carry, xs):
    mb, r = xs
    g, s = grad_fn(params, mb, r)
    return jax.tree.map(jnp.add, carry, (g, s)), None

  zeros = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), rngs[0])
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
  (grads, sums), _ = jax.lax.scan(body, zeros, (micro, rngs))
  return grads, sums


def make_train_step(loss_sums: Callable, tx, schedule, microbatches: int = 1, weight_name: str = 'weight'):
  """``step(state, batch) -> (state, metrics)``; metrics are the ``sums`` divided by ``weight``.

  The weight itself is reported as ``weight_name`` (e.g. ``tokens`` for next-token losses).
  """

  def step(state, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state['rng']), state['step'])
    grads, sums = accumulate(loss_sums, state['params'], batch, rng, microbatches)
    weight = jnp.maximum(sums['weight'], 1.0)
    grads = jax.tree.map(lambda g: g / weight, grads)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics = {k: v / weight for k, v in sums.items() if k != 'weight'}
    metrics.update({weight_name: sums['weight']}, grad_norm=optax.tree.norm(grads), lr=schedule(state['step']))
    new_state = dict(state, step=state['step'] + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  return step
