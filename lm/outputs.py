"""What each stage hands on: a small dataclass per kind of stage, saved as ``<stage>/outputs.json``.

Later stages read fields (``inputs['sft'].checkpoint_dir``), never string keys of a dict; the
launcher, the report card, the serving helpers and the comparison tables read the same files
through ``load``. Paths are the contract (``fields``); final numbers go to ``metrics`` (a flat
``name -> number`` dict: ``loss``, ``eval_loss``, ``sft.accuracy``, ...), which ``get`` reads like
a field, so a table column ``stage.key`` names either.

  out = outputs.Model(checkpoint_dir=..., model=..., tokenizer=..., metrics={'loss': 2.1})
  outputs.save(out, workdir / 'sft' / 'outputs.json')
  outputs.load(workdir / 'sft' / 'outputs.json').checkpoint_dir
"""

import dataclasses
import json
from pathlib import Path


@dataclasses.dataclass(kw_only=True)
class Outputs:
  """What every stage's outputs hold beside their own fields."""
  metrics: dict = dataclasses.field(default_factory=dict)  # final numbers, flat: name -> value
  wall_s: float = 0.0                                      # set by the launcher
  devices: dict = dataclasses.field(default_factory=dict)  # set by the launcher: count, kind
  compile_s: float | None = None                           # set by the launcher: lm.compile_time's, in the stage

  def get(self, key: str, default=None):
    """A field or a metric by name (fields first), like ``dict.get``."""
    if key in self.__dataclass_fields__ and key != 'metrics':
      return getattr(self, key)
    return self.metrics.get(key, default)

  def flat(self) -> dict:
    """Fields and metrics together in one dict (metrics last)."""
    own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != 'metrics'}
    return {**own, **self.metrics}

  def scalars(self) -> dict:
    """Every number the stage reports, fields and metrics together (for tables)."""
    return {k: v for k, v in self.flat().items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@dataclasses.dataclass(kw_only=True)
class Data(Outputs):
  """The data stage: the lab's datasets (tfds, array_record)."""
  tfds_dir: str


@dataclasses.dataclass(kw_only=True)
class Tokenizer(Outputs):
  path: str
  vocab_size: int


@dataclasses.dataclass(kw_only=True)
class Model(Outputs):
  """A model a stage trained or imported (pretrain, import, sft, sft_original, sft_synthetic, rlhf):
  its checkpoint (for LoRA: the adapters, merged into ``base_checkpoint_dir``'s params on load),
  its ``ModelConfig`` fields and its tokenizer file."""
  checkpoint_dir: str
  model: dict
  tokenizer: str
  lora: dict | None = None
  base_checkpoint_dir: str = ''


@dataclasses.dataclass(kw_only=True)
class Imported(Model):
  """A Hugging Face checkpoint brought in by the import stage (``lm.interop``)."""
  family: str
  hf_dir: str
  token_ids: dict = dataclasses.field(default_factory=dict)  # bos/eos/pad ids of its config.json


@dataclasses.dataclass(kw_only=True)
class Reward(Model):
  """The reward model: a ``Model`` with a scalar head, and the raw mean and std of its rewards on
  the reference policy's samples (``lm.steps.reward.normalised``)."""
  reward_mean: float
  reward_std: float


@dataclasses.dataclass(kw_only=True)
class Rlhf(Model):
  """The RLHF policy (for best-of-n, the reference itself) and the stage's report."""
  algorithm: str
  report: str = ''


@dataclasses.dataclass(kw_only=True)
class Rankings(Outputs):
  """Preference rankings (the preferences stage)."""
  tfds_dir: str
  panel: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(kw_only=True)
class Synthetic(Outputs):
  tfds_dir: str
  samples_file: str


@dataclasses.dataclass(kw_only=True)
class Eval(Outputs):
  """The eval stage: ``metrics`` holds ``<model>.<metric>`` (``sft.accuracy``, ...)."""
  results: str
  report: str


@dataclasses.dataclass(kw_only=True)
class Curves(Outputs):
  """A stage that fits and plots curves from earlier metrics (overoptimization)."""
  plot: str


KINDS = {cls.__name__: cls for cls in (Outputs, Data, Tokenizer, Model, Imported, Reward, Rlhf, Rankings, Synthetic,
                                       Eval, Curves)}


def to_json(out: Outputs) -> dict:
  return {'kind': type(out).__name__, **dataclasses.asdict(out)}


def from_json(record: dict, where: str = 'outputs') -> Outputs:
  """The dataclass a ``to_json`` record describes; a record of another version is a one-line error."""
  record = dict(record)
  kind = record.pop('kind', None)
  if kind not in KINDS:
    raise ValueError(f'{where}: unknown outputs kind {kind!r} (written by another version of lm?); '
                     f'valid: {", ".join(KINDS)}')
  cls = KINDS[kind]
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(record) - names)
  missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in record
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
  if unknown or missing:
    what = f'unknown field {unknown[0]!r}' if unknown else f'missing field {missing[0]!r}'
    raise ValueError(f'{where}: {kind} outputs with {what} (written by another version of lm?)')
  return cls(**record)


def save(out: Outputs, path) -> None:
  """Writes ``out`` atomically (a killed run never leaves half a file that marks a stage complete)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix('.tmp')
  tmp.write_text(json.dumps(to_json(out), indent=2, default=str) + '\n')
  tmp.replace(path)


def load(path) -> Outputs:
  path = Path(path)
  try:
    record = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON ({e})') from None
  return from_json(record, str(path))
