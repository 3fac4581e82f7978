"""Import stage: a Hugging Face checkpoint (``interop.hf_dir``) as the model later stages start from.

Its outputs look like a training stage's (``checkpoint_dir``, ``model``, ``tokenizer``), so SFT
starts from them as from ``pretrain``. ``config.model`` must describe the checkpoint (an experiment
fills it with ``lm.interop.convert.model_config``); the dtype, scan and remat choices are its own.
"""

import dataclasses

from lm import outputs
from lm.config import ConfigError
from lm.interop import convert
from lm.model.transformer import ModelConfig
from lm.stages import common

RUN_CHOICES = ('dtype', 'scan_layers', 'remat', 'max_seq_len')  # fields a run may set differently


def run(config, workdir, inputs) -> outputs.Imported:
  del inputs
  hf_dir = config.interop.hf_dir
  if not hf_dir:
    raise ConfigError('the import stage needs interop.hf_dir: a Hugging Face checkpoint directory')
  family, expected = convert.model_config(hf_dir)
  model = ModelConfig.from_config(config.model)
  for field in dataclasses.fields(ModelConfig):
    if field.name not in RUN_CHOICES and getattr(model, field.name) != getattr(expected, field.name):
      raise ConfigError(f'model.{field.name}={getattr(model, field.name)!r} but the {family} checkpoint in {hf_dir} '
                        f'has {getattr(expected, field.name)!r}')
  mesh, rules = common.mesh_and_rules(config)
  return convert.import_checkpoint(hf_dir, workdir, mesh, rules, **{k: getattr(model, k) for k in RUN_CHOICES})
