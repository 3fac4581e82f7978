"""Memory and FLOPs plans for real sizes: the real train step compiled ahead of time on a simulated mesh.

Each plan (``lm/configs/plans.py``: a model, a TPU slice, its mesh, the global batch, microbatches)
runs in its own process with ``--xla_force_host_platform_device_count=<chips>`` set before jax is
imported, so the mesh has as many (CPU) devices as the slice has chips. The train state is
abstract (``jax.eval_shape`` of the init, ShapeDtypeStructs carrying the NamedShardings the logical
rules give), the batch too; ``lm.train.jit_train_step`` (the step ``lm.train.run`` compiles: the
LM objective of ``lm.steps.lm``, gradient accumulation over microbatches, AdamW, donation) is
lowered and compiled. Nothing is allocated. Per device it prints the compiled program's
``memory_analysis()`` (arguments = the train state shard + batch, outputs, temporaries, peak =
arguments + outputs - donated aliases + temporaries) against the chip's HBM, and its FLOPs.

FLOPs: ``cost_analysis()`` counts the body of a loop once (a scan over layers, the vocab head's
chunk scan, microbatches), so the table also gives the dot FLOPs of the optimized HLO with every
loop body counted as many times as the loop runs (``hlo_dot_flops``; a conditional counts its
costliest branch). ``model`` is 6 x matmul params x tokens (``matmul_params``: the layers'
projections and the vocab head once, tied or untied; lookups and norms excluded) + causal
attention; compiled / model > 1 is rematerialisation and attention blocks.

Caveats: the compiler is XLA:CPU, not XLA:TPU: layouts, fusion and scheduling differ, and attention
is ``model.attention='chunked'`` (on TPU, ``auto`` runs the splash kernel, which keeps O(T) memory
per head where the causal blocks keep their probabilities for the backward), so read the
temporaries as an estimate with margin, not a TPU measurement.
HBM per chip: v5p 95 GB, v6e 32 GB, v5e 16 GB (10^9 bytes; GiB below are 2^30).

Usage:
  python benchmarks/aot_plan.py                  # every plan, one subprocess each
  python benchmarks/aot_plan.py 8b_v5p64         # named plans
  python benchmarks/aot_plan.py --one 8b_v5p64   # one plan in this process (prints one JSON line)

Results (``python benchmarks/aot_plan.py``, jax 0.10.2 on a 2-core CPU, 2026-11-26; 41-46 s of
compile per plan). Every plan: bfloat16 matmuls (params, activations and AdamW state float32),
``scan_layers``, remat ``full`` (the 1B preset's ``dots_no_batch`` kept 19.4 GiB on v5e-8), one
sequence per device per microbatch; 70B on v6e-256 also shards the residual stream's features over
``tensor`` (``act_embed``; without it 8 sequences per device took 210 GiB). state = params + AdamW
moments per device, peak = arguments + outputs - donated + temporaries, GiB; HBM in GiB (95 GB =
88.5 GiB); mesh = data, fsdp, tensor; TFLOP per device per step: compiled (dots, loops counted), model
(6N + attention), x = ratio:
| plan | chips | params | mesh | batch x seq/micro | remat | state | temps | peak | HBM | fits | TFLOP/dev | model | x |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| 1b_v5e8 | 8 | 1.24B | 1,8,1 | 32 x 2048 / 1 | full | 1.7 | 7.6 | 9.4 | 14.9 | yes | 77 | 64 | 1.20 |
| 8b_v5p32 | 16 | 8.03B | 1,16,1 | 32 x 8192 / 2 | full | 5.6 | 29.1 | 34.7 | 88.5 | yes | 1054 | 843 | 1.25 |
| 8b_v5p64 | 32 | 8.03B | 1,32,1 | 64 x 8192 / 2 | full | 2.8 | 27.3 | 30.1 | 88.5 | yes | 1054 | 843 | 1.25 |
| 8b_v5p128 | 64 | 8.03B | 1,64,1 | 128 x 8192 / 2 | full | 1.4 | 26.4 | 27.8 | 88.5 | yes | 1054 | 843 | 1.25 |
| 70b_v5p256 | 128 | 70.55B | 1,32,4 | 128 x 8192 / 4 | full | 6.2 | 37.2 | 43.4 | 88.5 | yes | 4604 | 3680 | 1.25 |
| 70b_v5p512 | 256 | 70.55B | 1,64,4 | 256 x 8192 / 4 | full | 3.1 | 35.2 | 38.3 | 88.5 | yes | 4604 | 3680 | 1.25 |
| 70b_v6e256 | 256 | 70.55B | 1,32,8 | 256 x 8192 / 8 | full | 3.1 | 10.5 | 13.6 | 29.8 | yes | 4604 | 3680 | 1.25 |
(``model`` recomputed 2026-12 with the untied 8B/70B head counted once; it was counted twice
before, 895 / 3732 TFLOP, x 1.18 / 1.23; the compiled column is unchanged.)
8B needs 28-35 GiB of v5p's 88.5 on 16, 32 or 64 chips, and 70B 38-43 GiB on 128 or 256: room
for longer sequences, or ``dots_no_batch`` remat to recompute less. Temporaries barely shrink
with more FSDP devices: they are one sequence's activations plus whole-vocabulary gathers
(embedding and head, 2 GiB each at 8B in float32).
"""

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

GIB = 2 ** 30
_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 'bf16': 2, 'f16': 2, 's16': 2, 'u16': 2, 'f32': 4, 's32': 4, 'u32': 4,
          'f64': 8, 's64': 8, 'u64': 8}


# ---------------------------------------------------------------------------------------- FLOPs

def hlo_dot_flops(hlo_text: str) -> float:
  """2 x (output elements) x (contracted size) summed over the dots of an optimized HLO module, each
  counted as many times as the loops around it run (``known_trip_count``); a conditional counts its
  costliest branch. Fused computations are followed, so dots inside fusions count too."""
  shapes, comps, current = {}, {}, None
  for line in hlo_text.splitlines():
    head = re.match(r'(?:ENTRY )?%([\w.\-]+) \(.*\) -> .*\{$', line)
    if head:
      current = comps.setdefault(head.group(1), {'flops': 0.0, 'calls': []})
      if line.startswith('ENTRY'):
        entry = head.group(1)
      continue
    m = re.match(r'\s*(?:ROOT )?%([\w.\-]+) = (\w+)\[([\d,]*)\]\S* (\w[\w\-]*)\((.*)', line)
    if current is None or not m:
      continue
    name, dims, op, rest = m.group(1), [int(d) for d in m.group(3).split(',') if d], m.group(4), m.group(5)
    shapes[name] = dims
    if op == 'dot':
      lhs = re.match(r'%([\w.\-]+)', rest).group(1)
      contracting = re.search(r'lhs_contracting_dims=\{([\d,]*)\}', rest).group(1)
      size = 1
      for d in (int(i) for i in contracting.split(',') if i):
        size *= shapes[lhs][d]
      out = 1
      for d in dims:
        out *= d
      current['flops'] += 2.0 * out * size
  current = None
  for line in hlo_text.splitlines():  # second pass: what each computation calls, and how often
    head = re.match(r'(?:ENTRY )?%([\w.\-]+) \(.*\) -> .*\{$', line)
    if head:
      current = comps[head.group(1)]
      continue
    if current is None or ' = ' not in line:
      continue
    body = re.search(r'\bbody=%([\w.\-]+)', line)
    if body:
      trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
      current['calls'].append(('loop', int(trips.group(1)) if trips else 1, [body.group(1)]))
    branches = re.search(r'branch_computations=\{([^}]*)\}', line)
    if branches:
      current['calls'].append(('branch', 1, re.findall(r'%([\w.\-]+)', branches.group(1))))
    tf = re.findall(r'(?:true|false)_computation=%([\w.\-]+)', line)
    if tf:
      current['calls'].append(('branch', 1, tf))
    for callee in re.findall(r'\b(?:calls|to_apply)=%([\w.\-]+)', line):
      current['calls'].append(('call', 1, [callee]))

  memo = {}

  def total(name):
    if name not in memo:
      c = comps.get(name, {'flops': 0.0, 'calls': []})
      memo[name] = c['flops'] + sum(n * max(total(x) for x in names) for _, n, names in c['calls'])
    return memo[name]

  return total(entry)


def matmul_params(model_cfg) -> int:
  """Weights that take part in a matmul: each layer's q, k, v, o and gated-MLP projections, and the
  vocab head once, whether it is the tied embedding or its own matrix (lookups, norms, biases and the
  scalar head excluded)."""
  c = model_cfg
  hd = c.head_size
  per_layer = c.d_model * (c.n_heads + 2 * c.n_kv_heads) * hd + c.n_heads * hd * c.d_model + 3 * c.d_model * c.d_ff
  return c.n_layers * per_layer + (c.d_model * c.vocab_size if c.lm_head else 0)


def model_flops(model_cfg, batch_size: int, seq_len: int) -> float:
  """6 x matmul params x tokens + causal attention (q k^T and p v over the keys at or before each
  query: 2 x 2 x T(T+1)/2 x heads x head_size per sequence and layer, x3 for the backward)."""
  c = model_cfg
  tokens = batch_size * seq_len
  attention = 3 * 4 * batch_size * c.n_layers * c.n_heads * c.head_size * seq_len * (seq_len + 1) / 2
  return 6.0 * matmul_params(c) * tokens + attention


# ----------------------------------------------------------------------------------------- plan

def plan(model_cfg, mesh, batch_size: int, seq_len: int, microbatches: int = 1, rules=None, optim=None) -> dict:
  """Compiles the train step of ``model_cfg`` on ``mesh`` for abstract ``[batch_size, seq_len]``
  batches; returns per-device bytes and FLOPs. Nothing is allocated."""
  import jax
  import jax.numpy as jnp
  import ml_collections

  from lm import optim as lm_optim
  from lm import sharding, train
  from lm.configs import optim as optim_presets
  from lm.model.transformer import Transformer
  from lm.steps import lm as lm_steps

  rules = sharding.DEFAULT_RULES if rules is None else rules
  cfg = ml_collections.ConfigDict({'steps': 1000, 'microbatches': microbatches,
                                   'optim': optim or optim_presets.adamw(3e-4, 100)})
  model = Transformer(model_cfg)
  init_params = lambda rng: model.init(rng, jnp.zeros((1, 8), jnp.int32))['params']  # noqa: E731 (as the stages)
  task = train.Task(name='plan', init_params=init_params, loss_sums=lm_steps.make_loss_sums(model),
                    train_batches=None, weight_name='tokens')
  tx, schedule = lm_optim.make_optimizer(cfg.optim, cfg.steps)
  t0 = time.time()
  _, abstract, state_shardings = train.abstract_state(task, tx, mesh, rules)
  batch_sharding = sharding.batch_sharding(mesh)
  batch = {k: jax.ShapeDtypeStruct((batch_size, seq_len), jnp.int32, sharding=batch_sharding)
           for k in ('inputs', 'targets', 'loss_mask', 'positions', 'segment_ids')}
  with sharding.use_mesh(mesh, rules):
    lowered = train.jit_train_step(task, cfg, tx, schedule, mesh, state_shardings).lower(abstract, batch, None)
  compiled = lowered.compile()
  compile_s = time.time() - t0
  m = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  n = mesh.size
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
  return {
      'devices': n, 'params': model_cfg.n_params(),
      'state_gib': state_bytes / GIB / n,
      'arguments_gib': m.argument_size_in_bytes / GIB, 'outputs_gib': m.output_size_in_bytes / GIB,
      'aliased_gib': m.alias_size_in_bytes / GIB, 'temps_gib': m.temp_size_in_bytes / GIB,
      'peak_gib': (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                   + m.temp_size_in_bytes) / GIB,
      'xla_flops': float(cost.get('flops', 0.0)), 'flops': hlo_dot_flops(compiled.as_text()),
      'model_flops': model_flops(model_cfg, batch_size, seq_len) / n, 'compile_s': compile_s,
  }


def run_one(name: str) -> dict:
  """One named plan in this process (jax must see the plan's device count)."""
  import jax

  from lm import sharding
  from lm.configs import plans
  from lm.model.transformer import ModelConfig

  p = plans.get(name)
  if jax.device_count() != p.chips:
    raise SystemExit(f'aot_plan: plan {name} needs {p.chips} devices, jax has {jax.device_count()}')
  model_cfg = ModelConfig.from_config(p.model)
  if model_cfg.attention in ('auto', 'splash'):  # splash (TPU) does not compile for CPU: the XLA blocks stand in
    model_cfg = dataclasses.replace(model_cfg, attention='chunked')
  mesh = sharding.make_mesh(p.mesh.shape)
  out = plan(model_cfg, mesh, p.batch_size, p.seq_len, p.microbatches, sharding.rules_from_config(p.mesh.rules))
  return {'plan': name, 'slice': p.slice, 'hbm_gib': p.hbm_bytes / GIB, 'mesh': list(mesh.devices.shape),
          'batch': p.batch_size, 'seq_len': p.seq_len, 'microbatches': p.microbatches,
          'remat': model_cfg.remat, 'dtype': model_cfg.dtype, **out}


def table(rows: list[dict]) -> str:
  head = ('| plan | chips | params | mesh d,f,t | batch x seq / micro | remat | state | temps | peak | HBM | fits | '
          'TFLOP/dev | model | x |')
  lines = [head, '|' + '---|' * (head.count('|') - 1)]
  for r in rows:
    lines.append(
        f"| {r['plan']} | {r['devices']} | {r['params'] / 1e9:.2f}B | {','.join(map(str, r['mesh']))} | "
        f"{r['batch']} x {r['seq_len']} / {r['microbatches']} | {r['remat']} | {r['state_gib']:.1f} | "
        f"{r['temps_gib']:.1f} | {r['peak_gib']:.1f} | {r['hbm_gib']:.1f} | "
        f"{'yes' if r['peak_gib'] <= r['hbm_gib'] else 'NO'} | {r['flops'] / 1e12:.0f} | "
        f"{r['model_flops'] / 1e12:.0f} | {r['flops'] / r['model_flops']:.2f} |")
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('plans', nargs='*', help='plan names (default: all)')
  parser.add_argument('--one', help='run this plan in this process and print its JSON')
  args = parser.parse_args()
  from lm.configs import plans
  if args.one:
    print('PLAN ' + json.dumps(run_one(args.one)), flush=True)
    return
  names = args.plans or list(plans.PLANS)
  unknown = [n for n in names if n not in plans.PLANS]
  if unknown:
    raise SystemExit(f'aot_plan: unknown plan {unknown[0]!r}; valid: {", ".join(plans.PLANS)}')
  rows = []
  for name in names:
    flags = re.sub(r'--xla_force_host_platform_device_count=\S*', '', os.environ.get('XLA_FLAGS', ''))
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS=f'{flags} --xla_force_host_platform_device_count={plans.PLANS[name]["chips"]}'.strip())
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), '--one', name], env=env,
                          capture_output=True, text=True)
    line = [l for l in proc.stdout.splitlines() if l.startswith('PLAN ')]
    if proc.returncode or not line:
      raise SystemExit(f'aot_plan: plan {name} failed:\n{proc.stderr[-3000:]}')
    rows.append(json.loads(line[0][len('PLAN '):]))
    print(f"{name}: compiled in {rows[-1]['compile_s']:.0f} s", file=sys.stderr, flush=True)
  print(table(rows))


if __name__ == '__main__':
  main()
