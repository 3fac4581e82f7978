"""Hugging Face interop: Llama (2, 3), Qwen (2, 3) and Gemma (1, 2) checkpoints in and out of lm.

  families.py        architectures and their configs <-> ModelConfig
  weights.py         tensors: HF names and layouts <-> lm params (placed on the mesh)
  safetensors_io.py  streaming reader and sharded writer of safetensors files
  convert.py         import into a workdir, export from a run (LoRA merged)

The checkpoint's tokenizer is ``lm.hf_tokenizer``, its chat template ``lm.data.chat_formats``; the
command line is ``python -m lm.interop import|export`` (``lm.cli.interop``).

Nothing here imports torch or transformers: they are needed only to check parity (tests).
"""
