"""A trained run's model, ready to answer: loading a stage of a workdir onto the local devices, its
tools, and the assistant's next turn for a batch of conversations (``lm.chat``, ``lm.generate``)."""

import dataclasses
import json
from pathlib import Path

from lm import outputs, sharding, tokenizer
from lm import tools as tools_lib
from lm.inference import agent, sample
from lm.lab import tasks
from lm.model import params as params_lib
from lm.model.transformer import ModelConfig, Transformer


@dataclasses.dataclass
class Served:
  params: object
  model: Transformer
  tokenizer: object
  mesh: object
  rules: tuple


def load(workdir, stage: str = 'sft') -> Served:
  """A trained stage's model on a mesh over every local device (LoRA adapters merged)."""
  path = Path(workdir) / stage / 'outputs.json'
  if not path.is_file():
    done = sorted(p.parent.name for p in Path(workdir).glob('*/outputs.json'))
    raise ValueError(f'{path} does not exist: stage {stage!r} has not finished in {workdir} '
                     f'(finished: {", ".join(done) or "none"})')
  trained = outputs.load(path)
  if not isinstance(trained, outputs.Model):
    raise ValueError(f'{path} is not a trained model stage\'s outputs (a {type(trained).__name__})')
  model = Transformer(ModelConfig.from_config(trained.model))
  mesh, rules = sharding.make_mesh((-1, 1, 1)), sharding.DEFAULT_RULES
  params = params_lib.load_trained(model, mesh, rules, trained.checkpoint_dir, trained.lora,
                                   trained.base_checkpoint_dir)
  return Served(params, model, tokenizer.load(trained.tokenizer), mesh, rules)


def load_tools(workdir, names) -> dict:
  """``lm.tools`` by name, the knowledge base and search over the run's world (its ``config.json``)."""
  if not names:
    return {}
  path = Path(workdir) / 'config.json'
  if not path.is_file():
    raise ValueError(f'{path} does not exist: the tools need the run\'s world (data.seed, data.world)')
  data = json.loads(path.read_text())['data']
  return tools_lib.build(names, dict(seed=data['seed'], **data['world']))


def offer_tools(messages) -> list[dict]:
  """``messages`` with the tools offer first (once)."""
  return messages if tasks.offers_tools(messages) else [{'role': 'system', 'content': tasks.TOOLS_SYSTEM}, *messages]


def reply(served: Served, conversations, cfg, rng, tools: dict | None = None, agent_cfg=None) -> list[dict]:
  """The assistant's next turn for each conversation, as ``agent.trace`` dicts (``messages``,
  ``answer``, ``calls``, ``finished``, ...). With ``tools`` the calls are run (``lm.inference.agent``);
  without, the plain sampler answers and a call is left as written."""
  if tools:
    return agent.complete_chats(served.params, served.model, served.tokenizer, conversations, cfg, rng, tools,
                                agent_cfg or agent.AgentConfig(), mesh=served.mesh, rules=served.rules)
  return [agent.plain_turn(r) for r in sample.complete_chats(served.params, served.model, served.tokenizer,
                                                             conversations, cfg, rng, mesh=served.mesh,
                                                             rules=served.rules)]
