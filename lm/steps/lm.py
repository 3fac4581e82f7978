"""Next-token prediction: pretraining (every token counts) and SFT (a mask picks assistant tokens).

Batch: ``inputs``, ``targets``, ``loss_mask``, ``positions``, ``segment_ids``, all ``[B, T]``.
"""

import jax
import jax.numpy as jnp

from lm.model import ops


def next_token_loss(logits_BxTxV, targets_BxT, mask_BxT, z_loss_weight: float = 0.0):
  """Masked cross-entropy sums: ``(objective_sum, {'loss', 'z_loss', 'weight'})``.

  z-loss (PaLM) adds ``z_loss_weight * log(Z)^2`` per token, keeping the softmax normaliser near 1.
  """
  mask = mask_BxT.astype(jnp.float32)
  log_z_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)
  target_logit_BxT = jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
  nll_sum = jnp.sum((log_z_BxT - target_logit_BxT) * mask)
  z_sum = jnp.sum(jnp.square(log_z_BxT) * mask)
  return nll_sum + z_loss_weight * z_sum, {'loss': nll_sum, 'z_loss': z_sum, 'weight': jnp.sum(mask)}


def fused_next_token_loss(model, params, hidden_BxTxD, targets_BxT, mask_BxT, z_loss_weight: float = 0.0):
  """``next_token_loss`` of the model's vocab head applied to ``hidden`` (its final-norm output),
  by ``ops.head_cross_entropy``: the [B, T, V] logits are never stored; same sums."""
  c = model.config
  head_DxV = params['embed'].T if c.tie_embeddings else params['head']
  B, T, D = hidden_BxTxD.shape
  objective, nll, z = ops.head_cross_entropy(
      hidden_BxTxD.reshape(B * T, D), head_DxV, targets_BxT.reshape(B * T), mask_BxT.reshape(B * T),
      z_loss_weight, c.compute_dtype)
  return objective, {'loss': nll, 'z_loss': z, 'weight': jnp.sum(mask_BxT.astype(jnp.float32))}


def make_loss_sums(model, z_loss_weight: float = 0.0, fused_head: bool = True):
  """``loss_sums(params, batch, rng)`` for ``lm.steps.common.make_train_step``.

  ``fused_head`` computes the loss from ``out['hidden']`` with the fused head + cross-entropy
  (faster, less memory; the unused logits are dropped by XLA); False uses ``out['logits']``.
  """

  def loss_sums(params, batch, rng):
    del rng
    out = model.apply({'params': params}, batch['inputs'], batch['positions'], batch['segment_ids'])
    if fused_head and not model.config.final_softcap:  # the fused head has no softcap
      return fused_next_token_loss(model, params, out['hidden'], batch['targets'], batch['loss_mask'],
                                   z_loss_weight)
    return next_token_loss(out['logits'], batch['targets'], batch['loss_mask'], z_loss_weight)

  return loss_sums


def make_eval_step(model):
  """``eval_step(params, batch) -> {'loss', 'weight'}`` (sums, to be pooled over batches)."""

  def eval_step(params, batch):
    out = model.apply({'params': params}, batch['inputs'], batch['positions'], batch['segment_ids'])
    if model.config.final_softcap:  # the fused head has no softcap
      _, sums = next_token_loss(out['logits'], batch['targets'], batch['loss_mask'])
    else:  # no [B, T, V] logits (at 70B and 8192 tokens a row, those are 4 GiB per row)
      _, sums = fused_next_token_loss(model, params, out['hidden'], batch['targets'], batch['loss_mask'])
    return {'loss': sums['loss'], 'weight': sums['weight']}

  return eval_step
