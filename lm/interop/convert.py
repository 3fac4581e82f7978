"""Import a Hugging Face checkpoint into an lm workdir, and export a trained lm run to one.

An imported workdir looks like a run whose ``import`` stage finished:
``<workdir>/import/outputs.json`` (``checkpoint_dir``, ``model``, ``tokenizer``, ``family``), the
params as an orbax checkpoint (step 0) and the tokenizer files, so ``lm.generate``, ``lm.chat``
(``--stage import``) and later stages (``experiments/sft_from_hf.py``) read it like any other.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from lm import checkpoint, hf_tokenizer, outputs, sharding
from lm import tokenizer as lm_tokenizer
from lm.interop import families, safetensors_io, weights
from lm.model import params as params_lib
from lm.model.transformer import ModelConfig, Transformer

STAGE = 'import'
EXPORT_STAGES = ('rlhf', 'sft', 'pretrain', 'import')  # the default export: the latest that finished


def read_hf_config(hf_dir) -> dict:
  path = Path(hf_dir) / 'config.json'
  if not path.is_file():
    raise FileNotFoundError(f'{path} does not exist: not a Hugging Face checkpoint directory')
  return json.loads(path.read_text())


def model_config(hf_dir, **overrides) -> tuple[str, ModelConfig]:
  """``(family, ModelConfig)`` of the checkpoint in ``hf_dir``; ``overrides`` set e.g. ``dtype``,
  ``scan_layers``, ``remat`` or a shorter ``max_seq_len``."""
  family, fields = families.model_fields(read_hf_config(hf_dir), str(Path(hf_dir) / 'config.json'))
  return family, ModelConfig(**{**fields, **overrides})


def load(hf_dir, mesh=None, rules=sharding.DEFAULT_RULES, **overrides):
  """``(family, ModelConfig, params on the mesh)`` of a Hugging Face checkpoint directory."""
  family, cfg = model_config(hf_dir, **overrides)
  mesh = sharding.make_mesh((-1, 1, 1)) if mesh is None else mesh
  return family, cfg, weights.load_params(safetensors_io.Reader(hf_dir), cfg, family, mesh, rules)


def import_checkpoint(hf_dir, workdir, mesh=None, rules=sharding.DEFAULT_RULES, overwrite: bool = False,
                      **overrides) -> outputs.Imported:
  """Writes the checkpoint of ``hf_dir`` (params, its tokenizer files) into
  ``<workdir>/import``; returns the stage outputs (also written to ``outputs.json``).

  A workdir that already holds a finished import is an error unless ``overwrite``. Everything is
  written to ``<workdir>/.import.partial`` first and renamed to ``import`` only once complete, so a
  failure at any point leaves the previous import (or none) as it was.
  """
  workdir = Path(workdir)
  stage_dir, partial = workdir / STAGE, workdir / f'.{STAGE}.partial'
  if (stage_dir / 'outputs.json').is_file() and not overwrite:
    raise FileExistsError(f'{workdir} already holds an import ({stage_dir}); pass --overwrite (overwrite=True) '
                          f'to replace it')
  family, cfg, params = load(hf_dir, mesh, rules, **overrides)
  chief = jax.process_index() == 0
  if chief:
    shutil.rmtree(partial, ignore_errors=True)  # what a crashed import left
  _sync('import_start')
  try:
    mgr = checkpoint.manager(partial / 'checkpoints', keep=1, async_save=False)
    checkpoint.save(mgr, 0, {'params': params}, {'source': str(Path(hf_dir).absolute()), 'family': family})
    mgr.wait_until_finished()
    mgr.close()
    tok = hf_tokenizer.save(hf_dir, partial / 'tokenizer', family, write=chief)
    hf_config = read_hf_config(hf_dir)
    imported = outputs.Imported(  # paths where the files are once renamed into place
        checkpoint_dir=str(stage_dir / 'checkpoints'), model=dataclasses.asdict(cfg), family=family,
        tokenizer=str(stage_dir / 'tokenizer' / tok.name) if tok else '', hf_dir=str(Path(hf_dir).absolute()),
        token_ids={k: hf_config[k] for k in ('bos_token_id', 'eos_token_id', 'pad_token_id') if k in hf_config},
        metrics={'params': sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))})
    if chief:
      outputs.save(imported, partial / 'outputs.json')
    _sync('import_written')  # every process's shards and the tokenizer files are in place
    if chief:
      _replace(partial, stage_dir)
  finally:
    if chief:
      shutil.rmtree(partial, ignore_errors=True)
  _sync('import_done')
  return imported


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _replace(new: Path, final: Path) -> None:
  """Puts directory ``new`` at ``final``: the old one is renamed aside, then ``new`` renamed in (back on
  failure), then the old one removed."""
  old = final.with_name(f'.{final.name}.old')
  shutil.rmtree(old, ignore_errors=True)
  if final.exists():
    final.rename(old)
  try:
    new.rename(final)
  except OSError:
    if old.exists():
      old.rename(final)
    raise
  shutil.rmtree(old, ignore_errors=True)


def _stage_outputs(workdir, stage: str | None) -> tuple[str, outputs.Model]:
  workdir = Path(workdir)
  stages = [stage] if stage else [s for s in EXPORT_STAGES if (workdir / s / 'outputs.json').is_file()]
  if not stages or not (workdir / stages[0] / 'outputs.json').is_file():
    done = sorted(p.parent.name for p in workdir.glob('*/outputs.json'))
    raise FileNotFoundError(f'{workdir}: no finished {stage or "/".join(EXPORT_STAGES)} stage to export '
                            f'(finished: {", ".join(done) or "none"})')
  trained = outputs.load(workdir / stages[0] / 'outputs.json')
  if not isinstance(trained, outputs.Model):
    raise ValueError(f'{workdir / stages[0] / "outputs.json"} is not a trained model stage\'s outputs')
  return stages[0], trained


def save_hf(params, cfg, out_dir, dtype: str = 'float32', token_ids: dict | None = None, tokenizer_dir=None,
            max_shard_bytes: int = 2 << 30) -> dict:
  """Writes ``params`` of ``Transformer(cfg)`` as a Hugging Face checkpoint: ``config.json``,
  safetensors in ``dtype`` and the tokenizer files found in ``tokenizer_dir``, if any."""
  family = families.family_of_model(cfg)
  np_dtype = {'float32': np.float32, 'bfloat16': safetensors_io.DTYPES['BF16'], 'float16': np.float16}.get(dtype)
  if np_dtype is None:
    raise ValueError(f'--dtype={dtype!r}; valid: float32, bfloat16, float16')
  out_dir = Path(out_dir)
  files = safetensors_io.write(out_dir, weights.hf_tensors(params, cfg, family), np_dtype, max_shard_bytes)
  hf_cfg = families.hf_config(cfg, family, {**(token_ids or {}), 'dtype': dtype})
  (out_dir / 'config.json').write_text(json.dumps(hf_cfg, indent=2) + '\n')
  for name in hf_tokenizer.COPIED if tokenizer_dir else ():
    if (Path(tokenizer_dir) / name).is_file():
      (out_dir / name).write_bytes((Path(tokenizer_dir) / name).read_bytes())
  return {'family': family, 'out': str(out_dir), 'files': [f.name for f in files]}


def export_checkpoint(workdir, out_dir, stage: str | None = None, dtype: str = 'float32',
                      max_shard_bytes: int = 2 << 30) -> dict:
  """Writes a trained stage of ``workdir`` (LoRA adapters merged) as a Hugging Face checkpoint
  (``save_hf``); an imported tokenizer goes along. Returns ``{stage, family, out, files}``."""
  stage, trained = _stage_outputs(workdir, stage)
  cfg = ModelConfig.from_config(trained.model)
  families.family_of_model(cfg)  # an unexportable model fails before anything is restored
  params = params_lib.load_trained(Transformer(cfg), sharding.make_mesh((-1, 1, 1)), sharding.DEFAULT_RULES,
                                   trained.checkpoint_dir, trained.lora, trained.base_checkpoint_dir)
  token_ids = dict(trained.get('token_ids') or {})
  tok_path = Path(trained.tokenizer or '.')
  tokenizer_dir = tok_path.parent if tok_path.name == hf_tokenizer.META_FILE else None
  if not token_ids and tokenizer_dir is not None:
    token_ids = _token_ids(tokenizer_dir)
  elif not token_ids:
    token_ids = {'bos_token_id': lm_tokenizer.BOS_ID, 'eos_token_id': lm_tokenizer.EOS_ID,
                 'pad_token_id': lm_tokenizer.PAD_ID}  # lm's own tokenizer (not exported): its fixed ids
  return {'stage': stage, **save_hf(params, cfg, out_dir, dtype, token_ids, tokenizer_dir, max_shard_bytes)}


def _token_ids(tokenizer_dir) -> dict:
  tok = hf_tokenizer.load(Path(tokenizer_dir) / hf_tokenizer.META_FILE)
  return {'bos_token_id': tok.bos_id, 'eos_token_id': tok.eos_id, 'pad_token_id': tok.pad_id}
