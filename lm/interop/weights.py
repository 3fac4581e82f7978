"""Tensors between Hugging Face names and layouts and lm params.

HF stores a linear layer as ``weight [out, in]`` (``y = x @ W.T``); lm keeps ``[in, ...out]`` with
the attention projections fused (see ``lm.model``):

  lm param                      HF tensors of layer i (prefix model.layers.{i}.)
  wqkv   [D, K, G+2, E]        self_attn.{q,k,v}_proj.weight  [H*E, D], [K*E, D], [K*E, D]
  bqkv   [K, G+2, E]           self_attn.{q,k,v}_proj.bias    (qwen2)
  wo     [H, E, D]             self_attn.o_proj.weight        [D, H*E]
  w_gate_up [D, F, 2]           mlp.{gate,up}_proj.weight      [F, D]
  w_down [F, D]                 mlp.down_proj.weight           [D, F]
  attn_norm, mlp_norm, ...      the family's norms (``layer_norms``)

Query head ``h`` of HF is lm's ``(kv_head, g) = divmod(h, G)``: both group query heads by the key /
value head they share, so the reshapes need no permutation. Norm scales are copied as stored (the
model applies Gemma's ``1 + w`` itself), so a round trip is exact.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm import sharding
from lm.interop.families import UnsupportedError
from lm.model.transformer import Transformer

IGNORED_SUFFIXES = ('rotary_emb.inv_freq',)  # buffers some older checkpoints saved


def layer_norms(family: str) -> dict:
  """lm norm module name -> HF norm name within a layer."""
  if family == 'gemma2':
    return {'attn_norm': 'input_layernorm', 'post_attn_norm': 'post_attention_layernorm',
            'mlp_norm': 'pre_feedforward_layernorm', 'post_mlp_norm': 'post_feedforward_layernorm'}
  norms = {'attn_norm': 'input_layernorm', 'mlp_norm': 'post_attention_layernorm'}
  if family == 'qwen3':
    norms.update(q_norm='self_attn.q_norm', k_norm='self_attn.k_norm')
  return norms


def _dims(cfg):
  return cfg.d_model, cfg.n_kv_heads, cfg.q_per_kv, cfg.head_size, cfg.n_heads, cfg.d_ff


# --------------------------------------------------------------------------------------- import

class _Source:
  """Reads HF tensors with shape checks, remembering which were used."""

  def __init__(self, reader):
    self.reader, self.used = reader, set()

  def __call__(self, name: str, shape) -> np.ndarray:
    if name not in self.reader:
      raise ValueError(f'{self.reader.directory}: missing tensor {name}')
    if tuple(self.reader.shape(name)) != tuple(shape):
      raise ValueError(f'{self.reader.directory}: tensor {name} has shape {tuple(self.reader.shape(name))}, '
                       f'config.json implies {tuple(shape)}')
    self.used.add(name)
    return self.reader.get(name, np.float32)


def _layer_param(src, cfg, family, i: int, key: tuple) -> np.ndarray:
  """lm param ``key`` (path inside a layer) of layer ``i``, in lm layout."""
  D, K, G, E, H, F = _dims(cfg)
  p = f'model.layers.{i}.'
  if key == ('wqkv',):
    q = src(p + 'self_attn.q_proj.weight', (H * E, D)).T.reshape(D, K, G, E)
    k = src(p + 'self_attn.k_proj.weight', (K * E, D)).T.reshape(D, K, 1, E)
    v = src(p + 'self_attn.v_proj.weight', (K * E, D)).T.reshape(D, K, 1, E)
    return np.concatenate([q, k, v], axis=2)
  if key == ('bqkv',):
    q = src(p + 'self_attn.q_proj.bias', (H * E,)).reshape(K, G, E)
    k = src(p + 'self_attn.k_proj.bias', (K * E,)).reshape(K, 1, E)
    v = src(p + 'self_attn.v_proj.bias', (K * E,)).reshape(K, 1, E)
    return np.concatenate([q, k, v], axis=1)
  if key == ('wo',):
    return src(p + 'self_attn.o_proj.weight', (D, H * E)).T.reshape(H, E, D)
  if key == ('w_gate_up',):
    gate, up = src(p + 'mlp.gate_proj.weight', (F, D)), src(p + 'mlp.up_proj.weight', (F, D))
    return np.stack([gate.T, up.T], axis=-1)
  if key == ('w_down',):
    return src(p + 'mlp.down_proj.weight', (D, F)).T
  norms = layer_norms(family)
  if len(key) == 2 and key[0] in norms and key[1] == 'scale':
    size = E if key[0] in ('q_norm', 'k_norm') else D
    return src(p + norms[key[0]] + '.weight', (size,))
  raise UnsupportedError(f'lm param {"/".join(key)} has no {family} tensor')


def _global_param(src, cfg, key: tuple) -> np.ndarray:
  if key == ('embed',):
    return src('model.embed_tokens.weight', (cfg.vocab_size, cfg.d_model))
  if key == ('final_norm', 'scale'):
    return src('model.norm.weight', (cfg.d_model,))
  if key == ('head',):
    return src('lm_head.weight', (cfg.vocab_size, cfg.d_model)).T
  raise UnsupportedError(f'lm param {"/".join(key)} has no Hugging Face tensor')


def _keys(path) -> tuple:
  return tuple(getattr(k, 'key', k) for k in path)


def abstract_params(cfg, mesh, rules):
  """``(ShapeDtypeStructs, NamedShardings)`` of the params of ``Transformer(cfg)`` on ``mesh``."""
  model = Transformer(cfg)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params'])
  return nn.unbox(boxed), nn.unbox(sharding.logical_shardings(boxed, mesh, rules))


def load_params(reader, cfg, family: str, mesh, rules):
  """The params of ``Transformer(cfg)`` from ``reader`` (``safetensors_io.Reader``), float32, each
  created straight into its sharding on ``mesh`` (every device reads only its own slice's layers).

  Every tensor of the checkpoint must find a place: a leftover one (a feature lm lacks) is an error.
  """
  src = _Source(reader)
  abstract, shardings = abstract_params(cfg, mesh, rules)

  @functools.lru_cache(maxsize=2)  # the devices of one param ask in turn: convert once
  def layer(i, key):
    return _layer_param(src, cfg, family, i, key)

  def build(path, leaf, leaf_sharding):
    keys = _keys(path)
    if keys[0] == 'layers':  # scanned: [L, ...] under layers/block
      key = keys[2:]
      def fetch(index):
        return np.stack([layer(i, key)[index[1:]] for i in range(cfg.n_layers)[index[0]]])
    elif keys[0].startswith('layer_'):
      i, key = int(keys[0][6:]), keys[1:]
      fetch = lambda index: layer(i, key)[index]  # noqa: E731
    else:
      value = _global_param(src, cfg, keys)
      fetch = lambda index: value[index]  # noqa: E731
    return jax.make_array_from_callback(leaf.shape, leaf_sharding, fetch)

  params = jax.tree_util.tree_map_with_path(build, abstract, shardings)
  ignored = {'lm_head.weight'} if cfg.tie_embeddings else set()
  left = [n for n in reader.names() if n not in src.used and n not in ignored and not n.endswith(IGNORED_SUFFIXES)]
  if left:
    raise UnsupportedError(f'{reader.directory}: tensor {left[0]} has no place in lm\'s {family} model '
                           f'({len(left)} unused tensors)')
  return params


# --------------------------------------------------------------------------------------- export

def _layer_tensors(layer: dict, cfg, family: str, i: int):
  D, K, G, E, H, F = _dims(cfg)
  p = f'model.layers.{i}.'
  wqkv = np.asarray(layer['wqkv'], np.float32)
  yield p + 'self_attn.q_proj.weight', wqkv[:, :, :G].reshape(D, H * E).T
  yield p + 'self_attn.k_proj.weight', wqkv[:, :, G].reshape(D, K * E).T
  yield p + 'self_attn.v_proj.weight', wqkv[:, :, G + 1].reshape(D, K * E).T
  if 'bqkv' in layer:
    bqkv = np.asarray(layer['bqkv'], np.float32)
    yield p + 'self_attn.q_proj.bias', bqkv[:, :G].reshape(H * E)
    yield p + 'self_attn.k_proj.bias', bqkv[:, G].reshape(K * E)
    yield p + 'self_attn.v_proj.bias', bqkv[:, G + 1].reshape(K * E)
  yield p + 'self_attn.o_proj.weight', np.asarray(layer['wo'], np.float32).reshape(H * E, D).T
  w_gate_up = np.asarray(layer['w_gate_up'], np.float32)
  yield p + 'mlp.gate_proj.weight', w_gate_up[..., 0].T
  yield p + 'mlp.up_proj.weight', w_gate_up[..., 1].T
  yield p + 'mlp.down_proj.weight', np.asarray(layer['w_down'], np.float32).T
  for lm_name, hf_name in layer_norms(family).items():
    yield p + hf_name + '.weight', np.asarray(layer[lm_name]['scale'], np.float32)


def hf_tensors(params, cfg, family: str):
  """``(name, float32 array)`` pairs of the HF checkpoint of ``params``, one at a time (host memory
  holds one layer's tensors at most). The params must be addressable from this process."""
  yield 'model.embed_tokens.weight', np.asarray(params['embed'], np.float32)
  for i in range(cfg.n_layers):
    if 'layers' in params:
      layer = jax.tree.map(lambda x: x[i], params['layers']['block'])
    else:
      layer = params[f'layer_{i}']
    yield from _layer_tensors(layer, cfg, family, i)
  yield 'model.norm.weight', np.asarray(params['final_norm']['scale'], np.float32)
  if not cfg.tie_embeddings:
    yield 'lm_head.weight', np.asarray(params['head'], np.float32).T
