"""Training plans for real sizes: a model, a TPU slice, its mesh and a batch that fit the slice's memory.

``benchmarks/aot_plan.py`` compiles each plan's train step ahead of time on a simulated mesh of as
many devices as the slice has chips and prints its memory and FLOPs per device;
``experiments/pretrain_scale.py:<plan>`` trains with one. A JAX device is a chip: v5p-N has N/2
chips (the name counts TensorCores), v5e-N (v5litepod-N) and v6e-N have N.
"""

import ml_collections

from lm.configs import meshes, models

HBM_BYTES = {'v5e': 16e9, 'v5p': 95e9, 'v6e': 32e9}  # per chip

PLANS = {
    # name: model size, slice, chips, mesh preset, global batch (sequences), sequence length, microbatches,
    # model fields that differ from the size's preset, logical axis rules that differ from the mesh's
    '1b_v5e8': dict(model='1b', slice='v5e-8', chips=8, mesh='v5e-8', batch_size=32, seq_len=2048, microbatches=1,
                    model_overrides={'remat': 'full'}),  # dots_no_batch keeps 19 GiB of activations: > 16 GB
    '8b_v5p32': dict(model='llama3_8b', slice='v5p-32', chips=16, mesh='v5p-32', batch_size=32, seq_len=8192,
                     microbatches=2),
    '8b_v5p64': dict(model='llama3_8b', slice='v5p-64', chips=32, mesh='v5p-64', batch_size=64, seq_len=8192,
                     microbatches=2),
    '8b_v5p128': dict(model='llama3_8b', slice='v5p-128', chips=64, mesh='v5p-128', batch_size=128, seq_len=8192,
                      microbatches=2),
    '70b_v5p256': dict(model='llama3_70b', slice='v5p-256', chips=128, mesh='v5p-256', batch_size=128,
                       seq_len=8192, microbatches=4),
    '70b_v5p512': dict(model='llama3_70b', slice='v5p-512', chips=256, mesh='v5p-512', batch_size=256,
                       seq_len=8192, microbatches=4),
    '70b_v6e256': dict(model='llama3_70b', slice='v6e-256', chips=256, mesh='v6e-256', batch_size=256,
                       seq_len=8192, microbatches=8, rules_overrides={'act_embed': 'tensor'}),
}


def get(name: str) -> ml_collections.ConfigDict:
  """The plan as a config: ``model`` (a full model section), ``mesh``, ``slice``, ``chips``,
  ``hbm_bytes``, ``batch_size``, ``seq_len``, ``microbatches``."""
  if name not in PLANS:
    raise ValueError(f'unknown plan {name!r}; valid: {", ".join(PLANS)}')
  p = dict(PLANS[name])
  family = p['slice'].split('-')[0]
  model = models.get(p['model'], **p.pop('model_overrides', {}))
  mesh = meshes.get(p['mesh'])
  rules = p.pop('rules_overrides', {})
  mesh.rules = tuple((logical, rules.get(logical, axes)) for logical, axes in mesh.rules)
  return ml_collections.ConfigDict({**p, 'model': model, 'mesh': mesh, 'hbm_bytes': HBM_BYTES[family]})
