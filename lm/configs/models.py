"""Model sizes. ``get(name, **overrides)`` gives a ``model`` config section with every field."""

import dataclasses

import ml_collections

from lm.model.transformer import ModelConfig

SIZES = {
    # ~5.5M params (4.4M without embeddings): the CPU size of the tiny lifecycle and the benchmark.
    'tiny': dict(vocab_size=4096, d_model=256, n_layers=6, n_heads=4, n_kv_heads=2, d_ff=704, max_seq_len=256),
    # for unit tests: compiles in seconds
    'test': dict(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128, max_seq_len=64),
    # 128M (104M without embeddings)
    '125m': dict(vocab_size=32000, d_model=768, n_layers=12, n_heads=12, n_kv_heads=4, d_ff=3072,
                 max_seq_len=2048, dtype='bfloat16'),
    # Llama-3.2-1B shape (1.24B)
    '1b': dict(vocab_size=128256, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, d_ff=8192,
               rope_theta=500000.0, max_seq_len=8192, dtype='bfloat16', scan_layers=True, remat='dots_no_batch'),
    'llama3_8b': dict(vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336,
                      rope_theta=500000.0, tie_embeddings=False, max_seq_len=8192, dtype='bfloat16',
                      scan_layers=True, remat='full'),
    'llama3_70b': dict(vocab_size=128256, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8, d_ff=28672,
                       rope_theta=500000.0, tie_embeddings=False, max_seq_len=8192, dtype='bfloat16',
                       scan_layers=True, remat='full'),
}


def get(name: str, **overrides) -> ml_collections.ConfigDict:
  if name not in SIZES:
    raise ValueError(f'unknown model size {name!r}; valid: {", ".join(SIZES)}')
  fields = dataclasses.asdict(ModelConfig())
  fields.update(SIZES[name], **overrides)
  ModelConfig(**fields)  # validate now, not at train time
  return ml_collections.ConfigDict(fields)
