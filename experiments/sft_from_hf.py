"""Supervised fine-tuning (full or LoRA) of a Hugging Face checkpoint on the lab's conversations.

  python -m lm.launch --config=experiments/sft_from_hf.py:<hf_dir> --workdir=runs/sft_gemma
  --config.sft.mode=lora          LoRA adapters on the frozen imported weights
  ...:smoke:<hf_dir>              a seconds-long version for tests
  python -m lm.interop export --workdir=runs/sft_gemma --out=<dir>   the result, for transformers

The checkpoint's ``config.json`` gives ``config.model`` (read now, weights later by the ``import``
stage); its sentencepiece tokenizer (Llama 2, Gemma) and chat format render the conversations.
Those formats have no thinking or tools, so SFT trains on the direct conversations only.
"""

import dataclasses

import ml_collections

from lm.configs import base
from lm.interop import convert


def get_config(arg: str = ''):
  smoke = arg.startswith('smoke:')
  hf_dir = arg[len('smoke:'):] if smoke else arg
  if not hf_dir:
    raise ValueError('experiments/sft_from_hf.py needs a checkpoint: --config=experiments/sft_from_hf.py:<hf_dir>')
  c = base.get_config()
  c.stages = ('data', 'import', 'sft')
  c.interop.hf_dir = hf_dir
  _, model = convert.model_config(hf_dir)
  c.model = ml_collections.ConfigDict(dataclasses.asdict(model))
  c.sft.thinking, c.sft.tools = False, False
  c.sft.optim.lr, c.sft.optim.warmup_steps = 2e-5, 10  # a pretrained model: a small step (LoRA: ~1e-4)
  if smoke:
    c.data.pretrain_chars, c.data.sft_examples, c.data.eval_examples = 20_000, 200, 2
    c.data.preferences.n_prompts = 20
    c.sft.steps, c.sft.batch_size, c.sft.seq_len = 4, 8, 64
    c.sft.log_every = c.sft.eval_every = c.sft.checkpoint_every = 2
    c.sft.eval_batches, c.sft.optim.warmup_steps, c.sft.optim.lr = 1, 1, 1e-3
  return c
