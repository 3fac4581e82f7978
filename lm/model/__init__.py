"""The transformer, its ops, attention backends, LoRA and params.

Shape letters, one meaning each across lm (a name ``x_BxTxD`` holds an array of shape [B, T, D]):

  B  batch: rows of a batch (in preference data: prompts, each with R responses)
  T  positions of a row (time)                 S  key/value positions (the KV cache's slots)
  P  prompt tokens                             N  new (generated) tokens
  D  model width                               E  head size
  H  query heads                               K  key/value heads
  G  query heads per key/value head (H = K G)  F  MLP hidden width
  J  rotary frequencies (E / 2)
  V  vocabulary                                L  layers
  C  rows of one block (blocked attention, the chunked vocab head)
  M, I, O  a matmul's rows, inputs and outputs ([M, I] @ [I, O]); M also counts flattened rows
  R  responses per prompt                      W  raters
  A  top-k alternatives of a sampled token     Q  parts of a subjective quality (a taste's weights)
  U  units rated (agreement statistics)        Y  values a rating takes (agreement statistics)
"""
