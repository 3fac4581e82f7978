"""Where a PPO iteration's time goes: sampling, scoring, updating, as in lm/stages/rlhf.py.

One iteration = sample B responses of N new tokens to B prompts (``lm.inference.sample``, one compiled program,
static shapes), score them (policy and reference log-probs, value estimates, reward model: four
forwards over the B x (P + N) rows, then GAE; ``lm.rl.rollouts.make_score``), then ``epochs`` passes
of minibatch updates of policy + value (``lm.rl.ppo.make_update``, one compiled program). All
three models have the tiny shape (or ``--size``), random weights; stop ids are disabled so every row
generates all N tokens. Each phase is timed after a warm-up call (compilation excluded), median of
``--repeats``. tokens/s counts the tokens each phase processes: generated tokens for sampling,
B x (P + N) per forward for scoring (4 models), epochs x B x (P + N) for the update (forward and
backward of 2 models); "per generated" divides B x N by the phase's time, so the columns add up
like rates of one pipeline.

Findings (tiny shape, f32, CPU = a shared 2-core EPYC under a load average of ~10, one machine, so
+-30% noise; the shares are the figure that matters):
  | B, epochs x minibatch | sample s | score s | update s | share sample / score / update | gen. tok/s |
  | 16, 4 x 16 (defaults) | 1.83 | 4.95 | 28.7 | 5% / 14% / 81% | 29 |
  | 64, 1 x 16            | 6.80 | 21.8 | 24.4 | 13% / 41% / 46% | 77 |
  On this CPU the update, not sampling, dominates: the KV-cache decode of a 5.5M model is cheap
  (~600 generated tok/s at B=16..64), while each epoch runs forward and backward of two models
  (policy, value) over prompt + response, at the train step's CPU rate (~300 tok/s here under load).
  Scoring costs four forwards (policy, reference, value, reward). On accelerators, where the
  backward is cheap relative to the sequential decode, sampling is expected to take the largest
  share; this was not measured here (no accelerator was available).

Usage:
  python benchmarks/rlhf_iteration.py                      # tiny, B=16, P=64, N=64, 4 epochs
  python benchmarks/rlhf_iteration.py --batch 64 --new_tokens 128 --size 125m
"""

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm import optim
from lm.configs import models
from lm.configs import optim as optim_presets
from lm.inference import sample
from lm.model.transformer import ModelConfig, Transformer
from lm.rl import advantages, ppo, rollouts
from lm.steps import reward as reward_steps
from lm.steps.common import init_state


def timed(fn, repeats):
  jax.block_until_ready(fn())  # compile + warm up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--size', default='tiny', choices=sorted(models.SIZES))
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--prompt_len', type=int, default=64)
  p.add_argument('--new_tokens', type=int, default=64)
  p.add_argument('--epochs', type=int, default=4)
  p.add_argument('--minibatch', type=int, default=16)
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--dtype', default='')
  args = p.parse_args()

  fields = dict(models.get(args.size))
  if args.dtype:
    fields['dtype'] = args.dtype
  config = ModelConfig(**fields)
  policy, scalar = Transformer(config), Transformer(dataclasses.replace(config, lm_head=False, scalar_head=True))
  init = lambda m, seed: jax.jit(lambda r: nn.unbox(m.init(r, jnp.zeros((1, 8), jnp.int32))['params']))(
      jax.random.key(seed))
  ref, rm = init(policy, 0), init(scalar, 1)
  rm['scalar_head'] = jax.random.normal(jax.random.key(2), rm['scalar_head'].shape) * 0.1
  B, P, N = args.batch, args.prompt_len, args.new_tokens
  rng = np.random.default_rng(0)
  prompts = [rng.integers(14, config.vocab_size, int(n)) for n in rng.integers(P // 2, P + 1, B)]
  prompt_BxP, mask_BxP = sample.left_pad(prompts, P, B)
  prompt_BxP, mask_BxP = jnp.asarray(prompt_BxP), jnp.asarray(mask_BxP)

  def reward_fn(params, tokens, segment_ids, positions, last_index):
    return reward_steps.sequence_rewards(scalar, params, tokens, segment_ids, positions, last_index)

  sampling = sample.SamplingConfig(temperature=1.0, max_new_tokens=N, stop_ids=(-1,))
  score = jax.jit(rollouts.make_score(policy, scalar, reward_fn, advantages.get('gae'), temperature=1.0))
  tx, schedule = optim.make_optimizer(optim_presets.adamw(1e-5, warmup_steps=0, weight_decay=0.0), 1000)
  update = jax.jit(ppo.make_update(ppo.make_loss_sums(policy, scalar, ppo.LossConfig()), tx, schedule,
                                   args.minibatch, args.epochs))
  state = init_state({'policy': ref, 'value': init(scalar, 3)}, tx)
  ref = jax.tree.map(jnp.copy, ref)
  kl_coef = jnp.float32(0.05)

  out = sample.sample_jit(state['params']['policy'], policy, prompt_BxP, mask_BxP, jax.random.key(0), sampling)
  batch, _ = score(state['params'], ref, rm, prompt_BxP, mask_BxP, out, kl_coef)
  t_sample = timed(lambda: sample.sample_jit(state['params']['policy'], policy, prompt_BxP, mask_BxP,
                                             jax.random.key(1), sampling)['tokens'], args.repeats)
  t_score = timed(lambda: score(state['params'], ref, rm, prompt_BxP, mask_BxP, out, kl_coef)[0], args.repeats)
  # the update donates nothing here: time it on the same state every repeat
  t_update = timed(lambda: update(state, batch, jax.random.key(2))[1]['loss'], args.repeats)

  generated = B * N
  rows = [('sample', t_sample, generated), ('score', t_score, 4 * B * (P + N)),
          ('update', t_update, args.epochs * B * (P + N))]
  total = sum(t for _, t, _ in rows)
  print(f'{jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}; model {args.size} '
        f'({config.n_params() / 1e6:.1f}M) {config.dtype}; B={B} prompts of {P} (left-padded), N={N} new tokens, '
        f'{args.epochs} epochs of minibatch {args.minibatch}; policy, reference, value and reward models')
  print('| phase | seconds | share | tokens/s (processed) | tokens/s (per generated) |')
  print('|---|---|---|---|---|')
  for name, t, processed in rows:
    print(f'| {name} | {t:.3f} | {t / total:.0%} | {processed / t:,.0f} | {generated / t:,.0f} |')
  print(f'| iteration | {total:.3f} | 100% | | {generated / total:,.0f} |')


if __name__ == '__main__':
  main()
