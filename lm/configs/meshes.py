"""Mesh presets over ``('data', 'fsdp', 'tensor')``; -1 takes the devices that are left."""

import ml_collections

from lm.sharding import DEFAULT_RULES

SHAPES = {
    'data': (-1, 1, 1),        # pure data parallel: CPU, one GPU, small models
    'fsdp': (1, -1, 1),        # params, grads and optimiser state sharded over every device
    'fsdp_tp2': (1, -1, 2),
    'fsdp_tp4': (1, -1, 4),    # e.g. 8B on v5p-64: fsdp 16 x tensor 4
    'fsdp_tp8': (1, -1, 8),    # e.g. 70B on v5p-256 / v6e-256
    'test_2x2x2': (2, 2, 2),   # every axis in play on 8 CPU devices
    # TPU slices (one device per chip; configs/plans.py says which model each is sized for)
    'v5e-8': (1, 8, 1),        # 1B: FSDP over the 8 chips of one host
    'v5p-32': (1, 16, 1),      # 8B: FSDP over 16 chips (4 hosts)
    'v5p-64': (1, 32, 1),      # 8B: FSDP over 32 chips
    'v5p-128': (1, 64, 1),     # 8B: FSDP over 64 chips
    'v5p-256': (1, 32, 4),     # 70B: FSDP 32 x tensor 4 (128 chips)
    'v5p-512': (1, 64, 4),     # 70B: FSDP 64 x tensor 4 (256 chips)
    'v6e-256': (1, 32, 8),     # 70B: FSDP 32 x tensor 8 (256 chips of 32 GB)
}


def get(name: str = 'data') -> ml_collections.ConfigDict:
  if name not in SHAPES:
    raise ValueError(f'unknown mesh preset {name!r}; valid: {", ".join(SHAPES)}')
  # cpu_devices: XLA:CPU devices to split a CPU-only host into (0: jax's own, one unless XLA_FLAGS says).
  # With 2 on two cores a ('data',) mesh runs half of each batch on each core, so the ops XLA:CPU runs on
  # one thread keep both busy: the float32 train step at 16 x 256 tokens 1.2x one device's; the lifecycle's
  # stages (16 x 128) gain little in float32 and lose in bf16 (benchmarks/RESULTS.md).
  return ml_collections.ConfigDict({'shape': SHAPES[name], 'rules': DEFAULT_RULES, 'cpu_devices': 0})
