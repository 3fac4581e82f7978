"""The full config schema with defaults. Experiments start from ``get_config()`` and change fields;
the result is locked, so a mistyped key is an error rather than a silently ignored new field."""

import ml_collections

from configs import meshes, models, optim


def train_section(steps: int, batch_size: int, seq_len: int, lr: float, warmup_steps: int = 100,
                  **overrides) -> ml_collections.ConfigDict:
  """What the train loop reads for one stage."""
  cfg = dict(
      steps=steps, batch_size=batch_size, seq_len=seq_len, microbatches=1, z_loss_weight=0.0,
      log_every=10, eval_every=100, eval_batches=4, checkpoint_every=100, keep_checkpoints=3,
      optim=optim.adamw(lr, warmup_steps))
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.stages = ('data', 'pretrain')
  c.mesh = meshes.get('data')
  # Set these for several processes outside TPU VMs (which jax detects itself).
  c.distributed = ml_collections.ConfigDict({'coordinator_address': '', 'num_processes': 1, 'process_id': 0})
  c.model = models.get('tiny')
  c.data = ml_collections.ConfigDict({'n_documents': 4000, 'n_validation': 200, 'vocab_size': 512,
                                      'split_digits': True})
  c.pretrain = train_section(steps=150, batch_size=16, seq_len=128, lr=3e-3, warmup_steps=15,
                             eval_every=50, checkpoint_every=50)
  # name -> nested overrides; each variant runs under <workdir>/<name>/ and ends in one table
  c.variants = ml_collections.ConfigDict()
  c.lock()
  return c
