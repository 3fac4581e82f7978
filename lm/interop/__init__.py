"""Hugging Face interop: Llama (2, 3), Qwen (2, 3) and Gemma (1, 2) checkpoints in and out of lm.

  families.py        architectures and their configs <-> ModelConfig
  weights.py         tensors: HF names and layouts <-> lm params (placed on the mesh)
  safetensors_io.py  streaming reader and sharded writer of safetensors files
  hf_tokenizer.py    the checkpoint's sentencepiece tokenizer behind lm's tokenizer interface
  chat_formats.py    the families' chat templates for lm's conversations
  convert.py         import into a workdir, export from a run (LoRA merged)
  __main__.py        ``python -m lm.interop import|export``

Nothing here imports torch or transformers: they are needed only to check parity (tests).
"""
