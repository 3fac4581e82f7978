"""Which Hugging Face architectures lm reads and writes, and how their configs map to ``ModelConfig``.

  family   architecture         what differs from a plain Llama (all ModelConfig fields)
  llama    LlamaForCausalLM     RoPE scaling ``llama3`` or ``linear`` (Llama 3.1+), tied head (3.2)
  qwen2    Qwen2ForCausalLM     biases on q, k, v (``qkv_bias``); sliding window on some layers
  qwen3    Qwen3ForCausalLM     RMSNorm of each query and key head (``qk_norm``); head_dim != d/heads
  gemma    GemmaForCausalLM     embeddings times sqrt(d_model), (1 + w) norms, GeGLU (tanh, also where
                                the config says hidden_act: gelu, as transformers reads it), head_dim
  gemma2   Gemma2ForCausalLM    + post-attention and post-MLP norms, attention and final logit
                                softcapping, query_pre_attn_scalar, sliding window on alternate layers

Anything else (another architecture, biases elsewhere, another RoPE type, partial rotary) is a
one-line error naming the config key.
"""

ARCHITECTURES = {'LlamaForCausalLM': 'llama', 'Qwen2ForCausalLM': 'qwen2', 'Qwen3ForCausalLM': 'qwen3',
                 'GemmaForCausalLM': 'gemma', 'Gemma2ForCausalLM': 'gemma2'}
FAMILY_ARCHITECTURE = {family: arch for arch, family in ARCHITECTURES.items()}
TIED_BY_DEFAULT = {'llama': False, 'qwen2': False, 'qwen3': False, 'gemma': True, 'gemma2': True}
ACTIVATIONS = {'silu': 'silu', 'swish': 'silu', 'gelu_pytorch_tanh': 'gelu_tanh', 'gelu_new': 'gelu_tanh',
               'gelu': 'gelu'}
HF_ACTIVATIONS = {'silu': 'silu', 'gelu_tanh': 'gelu_pytorch_tanh', 'gelu': 'gelu'}
ROPE_TYPES = ('default', 'linear', 'llama3')


class UnsupportedError(ValueError):
  """A checkpoint lm cannot represent: the message names the architecture or config key."""


def family_of_config(hf: dict, where: str = 'config.json') -> str:
  """The family of a Hugging Face ``config.json`` dict, from ``architectures`` (or ``model_type``)."""
  archs = hf.get('architectures') or []
  for arch in archs:
    if arch in ARCHITECTURES:
      return ARCHITECTURES[arch]
  if not archs and hf.get('model_type') in TIED_BY_DEFAULT:
    return hf['model_type']
  name = archs[0] if archs else f'model_type={hf.get("model_type")!r}'
  raise UnsupportedError(f'{where}: unsupported architecture {name}; supported: {", ".join(ARCHITECTURES)}')


def _rope(hf: dict, where: str) -> dict:
  params = dict(hf.get('rope_parameters') or hf.get('rope_scaling') or {})
  theta = params.get('rope_theta', hf.get('rope_theta', 10000.0))
  kind = params.get('rope_type', params.get('type', 'default')) or 'default'
  if kind not in ROPE_TYPES:
    raise UnsupportedError(f'{where}: unsupported rope_type {kind!r}; supported: {", ".join(ROPE_TYPES)}')
  if params.get('partial_rotary_factor', hf.get('partial_rotary_factor', 1.0)) != 1.0:
    raise UnsupportedError(f'{where}: unsupported partial_rotary_factor={params.get("partial_rotary_factor")}')
  out = {'rope_theta': float(theta)}
  if kind == 'linear':
    out.update(rope_scaling='linear', rope_factor=float(params['factor']))
  elif kind == 'llama3':
    out.update(rope_scaling='llama3', rope_factor=float(params['factor']),
               rope_low_freq_factor=float(params['low_freq_factor']),
               rope_high_freq_factor=float(params['high_freq_factor']),
               rope_original_max_len=int(params['original_max_position_embeddings']))
  return out


def _sliding(hf: dict, family: str) -> dict:
  n = hf['num_hidden_layers']
  types = hf.get('layer_types')
  if types is None:
    if family == 'gemma2':
      types = ['sliding_attention' if i % 2 == 0 else 'full_attention' for i in range(n)]
    elif family in ('qwen2', 'qwen3') and hf.get('use_sliding_window') and hf.get('sliding_window'):
      types = ['sliding_attention' if i >= hf.get('max_window_layers', 0) else 'full_attention' for i in range(n)]
    else:
      types = ['full_attention'] * n
  layers = tuple(i for i, t in enumerate(types) if t == 'sliding_attention')
  if family in ('qwen2', 'qwen3') and not hf.get('use_sliding_window'):
    layers = ()
  if not layers or not hf.get('sliding_window'):
    return {}
  return {'sliding_window': int(hf['sliding_window']), 'sliding_layers': layers}


def _activation(hf: dict, family: str, where: str) -> str:
  """The MLP gate activation (a ModelConfig name), read as transformers reads it.

  Gemma 2 and the others: ``hidden_activation`` (Gemma 2) or ``hidden_act``, ``gelu`` being exact.
  Gemma 1: the official configs say ``hidden_act: gelu`` but the model uses the tanh approximation;
  transformers >= 5 (``GemmaConfig.__post_init__``) reads ``hidden_act`` with ``gelu`` meaning
  ``gelu_pytorch_tanh``, while 4.39-4.47 (``GemmaMLP``) ignored ``hidden_act`` and used
  ``hidden_activation``, else ``gelu_pytorch_tanh``. lm reads the former; a ``hidden_activation``
  that the latter would turn into another function is an error (the config means two models).
  """
  key = 'hidden_activation' if family == 'gemma2' else 'hidden_act'
  act = hf.get(key) or ('gelu_pytorch_tanh' if family.startswith('gemma') else 'silu')
  if act not in ACTIVATIONS:
    raise UnsupportedError(f'{where}: unsupported {key}={act!r}; supported: {", ".join(ACTIVATIONS)}')
  name = 'gelu_tanh' if family == 'gemma' and act == 'gelu' else ACTIVATIONS[act]
  legacy = hf.get('hidden_activation')
  if family == 'gemma' and legacy is not None and ACTIVATIONS.get(legacy) != name:
    raise UnsupportedError(f'{where}: hidden_activation={legacy!r} disagrees with hidden_act={hf.get(key)!r} '
                           f'(read by transformers >= 5 as {HF_ACTIVATIONS[name]}); set them to the same function')
  return name


def model_fields(hf: dict, where: str = 'config.json') -> tuple[str, dict]:
  """``(family, ModelConfig kwargs)`` of a Hugging Face ``config.json`` dict."""
  family = family_of_config(hf, where)
  for key in ('attention_bias', 'mlp_bias', 'use_bidirectional_attention'):
    if hf.get(key):
      raise UnsupportedError(f'{where}: unsupported {key}={hf[key]} for {family}')
  heads = hf['num_attention_heads']
  fields = dict(
      vocab_size=hf['vocab_size'], d_model=hf['hidden_size'], n_layers=hf['num_hidden_layers'], n_heads=heads,
      n_kv_heads=hf.get('num_key_value_heads') or heads, head_dim=hf.get('head_dim') or hf['hidden_size'] // heads,
      d_ff=hf['intermediate_size'], norm_eps=float(hf.get('rms_norm_eps', 1e-6)),
      tie_embeddings=bool(hf.get('tie_word_embeddings', TIED_BY_DEFAULT[family])),
      max_seq_len=int(hf.get('max_position_embeddings', 2048)), mlp_activation=_activation(hf, family, where),
      **_rope(hf, where), **_sliding(hf, family))
  if family == 'qwen2':
    fields['qkv_bias'] = True
  if family == 'qwen3':
    fields['qk_norm'] = True
  if family in ('gemma', 'gemma2'):
    fields.update(scale_embeddings=True, norm_offset=1.0)
  if family == 'gemma2':
    fields.update(post_norms=True, query_pre_attn_scalar=float(hf.get('query_pre_attn_scalar') or 256),
                  attn_softcap=float(hf.get('attn_logit_softcapping') or 0.0),
                  final_softcap=float(hf.get('final_logit_softcapping') or 0.0))
  return family, fields


def family_of_model(cfg) -> str:
  """The family whose architecture computes what ``cfg`` (a ModelConfig) computes, or an error."""
  if cfg.scalar_head or not cfg.lm_head:
    raise UnsupportedError('model.scalar_head: a reward/value head has no Hugging Face causal-LM equivalent')
  gemma = cfg.scale_embeddings and cfg.norm_offset == 1.0
  gemma2_only = cfg.post_norms or cfg.attn_softcap or cfg.final_softcap or cfg.query_pre_attn_scalar
  if cfg.post_norms and gemma:
    family = 'gemma2'
  elif gemma and not gemma2_only:
    family = 'gemma'
  elif cfg.qk_norm:
    family = 'qwen3'
  elif cfg.qkv_bias:
    family = 'qwen2'
  else:
    family = 'llama'
  checks = {
      'model.scale_embeddings': cfg.scale_embeddings == family.startswith('gemma'),
      'model.norm_offset': cfg.norm_offset == (1.0 if family.startswith('gemma') else 0.0),
      'model.qk_norm': cfg.qk_norm == (family == 'qwen3'),
      'model.qkv_bias': cfg.qkv_bias == (family == 'qwen2'),
      'model.post_norms': cfg.post_norms == (family == 'gemma2'),
      'model.attn_softcap': not cfg.attn_softcap or family == 'gemma2',
      'model.final_softcap': not cfg.final_softcap or family == 'gemma2',
      'model.sliding_layers': not cfg.sliding_layers or family in ('gemma2', 'qwen2', 'qwen3'),
      'model.rope_scaling': cfg.rope_scaling == 'none' or family == 'llama',
      'model.mlp_activation': cfg.mlp_activation != 'gelu' or family != 'gemma',  # Gemma's hidden_act gelu is tanh
  }
  bad = [k for k, ok in checks.items() if not ok]
  if bad:
    raise UnsupportedError(f'{bad[0]}={getattr(cfg, bad[0][6:])!r}: no supported Hugging Face architecture '
                           f'computes this combination (closest: {family})')
  return family


def hf_config(cfg, family: str, extra: dict | None = None) -> dict:
  """A ``config.json`` dict for ``cfg`` (a ModelConfig) as ``family``; ``extra`` adds token ids etc."""
  hd = cfg.head_size
  out = {
      'architectures': [FAMILY_ARCHITECTURE[family]], 'model_type': family,
      'vocab_size': cfg.vocab_size, 'hidden_size': cfg.d_model, 'intermediate_size': cfg.d_ff,
      'num_hidden_layers': cfg.n_layers, 'num_attention_heads': cfg.n_heads, 'num_key_value_heads': cfg.n_kv_heads,
      'head_dim': hd, 'max_position_embeddings': cfg.max_seq_len, 'rms_norm_eps': cfg.norm_eps,
      'tie_word_embeddings': cfg.tie_embeddings, 'attention_bias': False,
      'hidden_act': HF_ACTIVATIONS[cfg.mlp_activation],
  }
  if family.startswith('gemma'):  # Gemma 2 reads this key; Gemma 1 reads either, by version (see _activation)
    out['hidden_activation'] = HF_ACTIVATIONS[cfg.mlp_activation]
  rope = {'rope_type': 'default', 'rope_theta': cfg.rope_theta}
  if cfg.rope_scaling == 'linear':
    rope.update(rope_type='linear', factor=cfg.rope_factor)
  elif cfg.rope_scaling == 'llama3':
    rope.update(rope_type='llama3', factor=cfg.rope_factor, low_freq_factor=cfg.rope_low_freq_factor,
                high_freq_factor=cfg.rope_high_freq_factor, original_max_position_embeddings=cfg.rope_original_max_len)
  out['rope_parameters'] = rope
  types = ['sliding_attention' if i in cfg.sliding_layers else 'full_attention' for i in range(cfg.n_layers)]
  if family in ('qwen2', 'qwen3'):
    out.update(use_sliding_window=bool(cfg.sliding_layers), sliding_window=cfg.sliding_window or None,
               max_window_layers=min(cfg.sliding_layers, default=cfg.n_layers), layer_types=types)
    if cfg.sliding_layers and tuple(cfg.sliding_layers) != tuple(range(min(cfg.sliding_layers), cfg.n_layers)):
      raise UnsupportedError(f'model.sliding_layers={cfg.sliding_layers}: {family} slides on the last layers only')
  if family == 'gemma2':
    scalar = cfg.query_pre_attn_scalar or hd
    out.update(query_pre_attn_scalar=int(scalar) if float(scalar).is_integer() else scalar,
               sliding_window=cfg.sliding_window or None,
               layer_types=types, attn_logit_softcapping=cfg.attn_softcap or None,
               final_logit_softcapping=cfg.final_softcap or None)
  out.update(extra or {})
  return out

