"""The report card of a run: ``<workdir>/report.md``, its PNG plots, and ``report.html`` (self-contained).

  python -m lm.report --workdir=<run> [--peak_flops=<FLOP/s of all the run's devices together>]   (lm.cli.report)

It reads what the run left: ``config.json``, each stage's ``outputs.json`` (final metrics, ``wall_s``,
``devices``), ``metrics.jsonl``, and ``eval/results.json`` with ``eval/traces_<model>.jsonl``. A
variant of a sweep also reads the stages it shares from ``<sweep>/shared``. Sections, always present
(one line saying so when a section has no data):

  Run                   stages, model size, devices, total wall time
  Loss curves           train and eval loss per training stage (``loss_curves.png``)
  Skills                copying probes as pretraining trains (``copy_curves.png``), skills as SFT trains,
                        the eval's report card across models (base, SFT, RLHF, ...), arithmetic by
                        digit count and letter counting by word length (from the traces)
  Reward model          held-out pairwise accuracy against the panel and gold, length correlations; per
                        family and domain the raters' agreement (Kendall's W, alpha) and both accuracies
  RLHF                  proxy and gold reward and KL over iterations, per-task accuracy, refusals (``rlhf.png``)
  Synthetic data        acceptance per family; what continued SFT on original + synthetic data adds
  Time and throughput   wall time per stage and its share, tokens/s, model FLOPs/token and MFU

A sweep's directory (``comparison.md``, no ``config.json``) gets the comparison table and links to
each variant's report. The launcher writes the reports at the end of every run.
"""

import base64
import dataclasses
import html
import json
import math
import shutil
import statistics
import time
from pathlib import Path

from lm import hardware, plots, probes, stats
from lm import metrics as metrics_lib
from lm import outputs as lm_outputs
from lm.model.transformer import ModelConfig
from lm.rl import names as rl_names
from lm.rl import report as rl_report

SECTIONS = ('Run', 'Loss curves', 'Skills', 'Reward model', 'RLHF', 'Synthetic data', 'Time and throughput')

SKILLS = (  # label, eval metric (lm.evals.report) or family accuracy ('family:<name>'), better when
    ('format following (ends its turn)', 'format_following', 'higher'),
    ('mean gold accuracy', 'accuracy', 'higher'),
    ('world questions', 'world_qa_accuracy', 'higher'),
    ('hallucination: unknown entities answered without "I don\'t know"', 'hallucination_rate', 'lower'),
    ('refusal of harmful requests', 'harmful_refusal_rate', 'higher'),
    ('over-refusal of benign near-misses', 'over_refusal_rate', 'lower'),
    ('length-control error (words)', 'length_error_words', 'lower'),
    ('length-control error (lines)', 'length_error_lines', 'lower'),
    ('translation exact match', 'translation_exact_match', 'higher'),
    ('arithmetic', 'family:arithmetic', 'higher'),
    ('word problems', 'family:word_problem', 'higher'),
    ('character counting', 'family:char_count', 'higher'),
    ('tool calls per answer', 'tool_calls_per_answer', ''),
    ('copies the sum asked (worked scratchpad, calculator call)', 'copies_the_sum', 'higher'),
    ('digit steps of worked sums that add up', 'digit_steps_right', 'higher'),
    ('copies the letter and word asked (counting scratchpad)', 'copies_the_word', 'higher'),
    ('letter comparisons of counting scratchpads that are right', 'letter_steps_right', 'higher'),
    ('knowledge-base call names the entity asked', 'look_up_names_the_subject', 'higher'),
)
BREAKDOWNS = (('arithmetic', 'digits', 'Arithmetic by digit count'),
              ('char_count', 'length', 'Character counting by word length'))
REWARD_KEYS = (('eval_panel_accuracy', 'held-out pairwise accuracy against the panel'),
               ('eval_gold_accuracy', 'held-out pairwise accuracy against gold'),
               ('length_correlation_reward', 'length correlation: reward model'),
               ('length_correlation_panel', 'length correlation: panel'),
               ('length_correlation_gold', 'length correlation: gold'),
               ('eval_loss', 'held-out ranking loss'), ('reward_mean', 'raw reward mean on reference samples'),
               ('reward_std', 'raw reward std on reference samples'), ('train_prompts', 'training prompts'))
RLHF_KEYS = rl_names.SUMMARY
NOT_TRAINING = ('rlhf', 'overoptimization')  # stages whose metrics rows are not a train/eval loss loop
# Dense bf16 peak FLOP/s of one jax device, by device_kind (TPU v2/v3 devices are cores, later ones chips).
PEAK_FLOPS = {'TPU v2': 22.5e12, 'TPU v3': 61.5e12, 'TPU v4': 275e12, 'TPU v5 lite': 197e12, 'TPU v5e': 197e12,
              'TPU v5p': 459e12, 'TPU v5': 459e12, 'TPU v6 lite': 918e12, 'TPU v6e': 918e12,
              'NVIDIA H100': 989e12, 'NVIDIA H200': 989e12, 'NVIDIA A100': 312e12}


# ------------------------------------------------------------------------------ reading a run

@dataclasses.dataclass
class Run:
  workdir: Path
  config: dict
  outputs: dict   # stage -> its outputs.json as one flat dict (fields and metrics), in the order the stages ran
  rows: list      # metrics.jsonl rows (shared stages' first)


def _json(path: Path):
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON ({e})') from None


def load(workdir) -> Run:
  """Everything the report reads from ``workdir`` (and from ``../shared`` for a sweep's variant)."""
  workdir = Path(workdir)
  if not (workdir / 'config.json').is_file():
    raise ValueError(f'{workdir / "config.json"} not found: not a run directory (nor a sweep with comparison.md)')
  config = _json(workdir / 'config.json')
  dirs = []
  shared = workdir.parent / 'shared'
  if config.get('shared_stages') and shared.is_dir() and shared != workdir:
    dirs.append((shared, list(config['shared_stages'])))
  dirs.append((workdir, list(config.get('stages', ()))))
  outputs, rows = {}, []
  for d, stages in dirs:
    for stage in stages:
      if (d / stage / 'outputs.json').is_file():
        outputs[stage] = lm_outputs.load(d / stage / 'outputs.json').flat()
    rows += [r for r in metrics_lib.read(d) if r.get('stage') in stages]
  return Run(workdir, config, outputs, rows)


def _stage_rows(run: Run, stage: str) -> list[dict]:
  return [r for r in run.rows if r.get('stage') == stage]


def _traces(run: Run, name: str) -> list[dict]:
  path = run.workdir / 'eval' / f'traces_{name}.jsonl'
  if not path.is_file():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------ numbers

def flops_per_token(model: ModelConfig, seq_len: int, trainable: int | None = None) -> int:
  """Model FLOPs of one trained token (forward + backward), the PaLM appendix B count that
  ``benchmarks/train_step.py`` uses: ``6 N + 12 L T d_attn``, N the params in matmuls (the layers
  and the head; a tied embedding counted once, as the head), T the sequence length. With LoRA
  (``trainable`` adapter params beside a frozen base) the base's weight gradients are not computed:
  ``4 N + 6 N_adapters + 12 L T d_attn``."""
  n_matmul = model.n_params(include_embedding=False)
  if model.lm_head and model.tie_embeddings:
    n_matmul += model.d_model * model.vocab_size
  attention = 12 * model.n_layers * seq_len * model.n_heads * model.head_size
  if trainable is not None:
    return 4 * n_matmul + 6 * trainable + attention
  return 6 * n_matmul + attention


def measured_cpu_peak(dtype: str = 'float32', n: int = 1024, reps: int = 5, seconds: float = 1.0) -> float:
  """FLOP/s of a ``n^3`` matmul on this host's CPU (the best of at least ``reps`` runs and ``seconds`` of
  them): the CPU's practical peak. Timing for a second, not five runs, keeps a moment's load on a shared
  host from halving the peak (and doubling every MFU)."""
  import jax
  import jax.numpy as jnp
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  f(a, a).block_until_ready()
  best, start, done = math.inf, time.perf_counter(), 0
  while done < reps or time.perf_counter() - start < seconds:
    t0 = time.perf_counter()
    f(a, a).block_until_ready()
    best, done = min(best, time.perf_counter() - t0), done + 1
  return 2 * n ** 3 / best


def peak_of(devices: dict | None, dtype: str, peak_flops: float | None = None) -> tuple[float | None, str]:
  """``(peak FLOP/s of all the run's devices, how it was obtained)``; None when unknown."""
  if peak_flops:
    return peak_flops, f'peak {peak_flops:.3g} FLOP/s (given)'
  if not devices:
    return None, 'MFU not computed: the run did not record its devices'
  kind, count = str(devices.get('kind', '')), int(devices.get('count', 1))
  match = max((k for k in PEAK_FLOPS if kind.lower().startswith(k.lower())), key=len, default=None)
  if match:
    return PEAK_FLOPS[match] * count, (f'peak {PEAK_FLOPS[match]:.3g} FLOP/s per device ({match}, dense bf16) '
                                       f'x {count} devices')
  if kind.lower() == 'cpu':
    import jax
    if jax.default_backend() != 'cpu':
      return None, 'MFU not computed: a CPU run reported on another backend (give --peak_flops)'
    dtype = hardware.resolve_dtype(dtype)  # 'auto' is what the run's matmuls were on this host
    peak = measured_cpu_peak(dtype)
    return peak, (f'peak {peak:.3g} FLOP/s: a 1024^3 {dtype} matmul on this host\'s CPU, measured now (the run\'s '
                  f'{count} CPU device(s) share the host\'s cores: this is their peak together)')
  return None, f'MFU not computed: no peak known for device kind {kind!r} (give --peak_flops)'


def _fmt(v, digits: int = 3) -> str:
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return '-'
  if isinstance(v, bool) or isinstance(v, int):
    return str(v)
  return f'{v:.{digits}f}'


def _family_accuracy(card: dict, family: str):
  sets = [s for s in card.get('sets', ()) if s['family'] == family]
  n = sum(s['n'] for s in sets)
  return sum(s['accuracy'] * s['n'] for s in sets) / n if n else None


def skill_value(card: dict, key: str):
  """One skill of an eval card (``results.json`` entry): a metric, or ``family:<name>`` accuracy."""
  if key.startswith('family:'):
    return _family_accuracy(card, key.split(':', 1)[1])
  return card.get('metrics', {}).get(key)


def _interval(card: dict, key: str) -> str | None:
  fields = card.get('intervals', {}).get(key)
  return str(stats.Estimate(**fields)) if fields else None


def breakdown_table(traces: dict, family: str, key: str) -> list[tuple[str, list]]:
  """Rows ``(label, [accuracy per model])`` of ``family``'s accuracy by ``meta[key]``, per variant."""
  values = {}  # (variant, value) -> {model: [scores]}
  for name, rows in traces.items():
    for r in rows:
      if r.get('family') == family and key in r.get('meta', {}):
        values.setdefault((r['variant'], r['meta'][key]), {}).setdefault(name, []).append(r['score'])
  out = []
  for variant, value in sorted(values):
    cells = values[(variant, value)]
    n = len(next(iter(cells.values())))
    out.append((f'{variant}, {key} {value} (n={n})',
                [statistics.fmean(cells[m]) if m in cells else None for m in traces]))
  return out


# ------------------------------------------------------------------------------ document

@dataclasses.dataclass
class Section:
  title: str
  blocks: list = dataclasses.field(default_factory=list)  # ('text', s) | ('table', header, rows) | ('image', file)

  def text(self, s: str):
    self.blocks.append(('text', s))

  def table(self, header, rows):
    self.blocks.append(('table', list(header), [list(r) for r in rows]))

  def image(self, name: str):
    self.blocks.append(('image', name))


# ------------------------------------------------------------------------------ sections

def run_section(run: Run) -> Section:
  s = Section('Run')
  c = run.config
  s.text(f'Stages: {", ".join(run.outputs) or "none finished"}.')
  model = _model_of(run, None)
  if model is not None:
    s.text(f'Model: {model.n_params():,} params ({model.n_params(include_embedding=False):,} without the embedding), '
           f'{model.n_layers} layers, d_model {model.d_model}, vocab {model.vocab_size}, {model.dtype}.')
  devices = next((o['devices'] for o in run.outputs.values() if 'devices' in o), None)
  if devices:
    s.text(f'Devices: {devices["count"]} x {devices["kind"]}.')
  walls = [o['wall_s'] for o in run.outputs.values() if 'wall_s' in o]
  if walls:
    s.text(f'Wall time of the stages: {sum(walls):.1f} s ({sum(walls) / 60:.1f} min).')
  if c.get('seed') is not None:
    s.text(f'Seed {c["seed"]}; the resolved config is config.json.')
  return s


def loss_section(run: Run, out_dir: Path) -> Section:
  s = Section('Loss curves')
  stages = [st for st in dict.fromkeys(r['stage'] for r in run.rows) if st not in NOT_TRAINING]
  panels, table = [], []
  for st in stages:
    rows = _stage_rows(run, st)
    train, held = plots.series(rows, 'loss'), plots.series(rows, 'eval_loss')
    if not train[0] and not held[0]:
      continue
    series = [(f'{st} train', *train, '-' if len(train[0]) >= 30 else '.-')] if train[0] else []
    series += [(f'{st} eval', *held, 'o--')] if held[0] else []
    panels.append((f'{st} loss', series, None))
    table.append([st, _fmt(train[1][0] if train[1] else None), _fmt(train[1][-1] if train[1] else None),
                  _fmt(held[1][0] if held[1] else None), _fmt(held[1][-1] if held[1] else None)])
  if not panels:
    s.text('No training stage logged losses in this run.')
    return s
  s.table(['stage', 'first train loss', 'last train loss', 'first eval loss', 'last eval loss'], table)
  cut = run.outputs.get('pretrain', {}).get('cut_from_doc_start')
  if cut is not None:
    s.text(f'Pretraining rows of {run.config["pretrain"]["seq_len"]} tokens: {cut:.0%} of their tokens sit in a row '
           'their document began before and cannot attend to its start.')
  plots.figure(out_dir / 'loss_curves.png', panels)
  s.image('loss_curves.png')
  return s


def skill_curves(run: Run, s: 'Section', out_dir: Path) -> None:
  """Each skill's accuracy as SFT trains (``sft.probe_examples`` > 0), one line per eval set."""
  rows = _stage_rows(run, 'sft')
  keys = sorted({k for r in rows for k in r if k.startswith('skill[')})
  if not keys:
    return
  n = run.config.get('sft', {}).get('probe_examples', '?')
  s.text(f'Skills as SFT trains: greedy accuracy on the first {n} eval prompts of each set at every SFT eval:')
  plots.figure(out_dir / 'skill_curves.png', [('skills during SFT', [(k[6:-1], *plots.series(rows, k), '')
                                                                       for k in keys], 'SFT step')])
  s.image('skill_curves.png')


def copy_curves(run: Run, s: 'Section', out_dir: Path) -> None:
  """The copying probes as pretraining trains (``pretrain.copy_probe`` > 0; ``lm.probes``)."""
  rows = _stage_rows(run, 'pretrain')
  keys = [k for k in probes.ROLES if any(k in r for r in rows)]
  if not keys:
    return
  n = run.config.get('pretrain', {}).get('copy_probe', '?')
  s.text(f'Copying as pretraining trains: teacher-forced top-1 on {n} worked sums and {n} random strings repeated '
         'once, by what the token is (chance for a digit about 0.1):')
  curves = {k: plots.series(rows, k) for k in keys}
  s.table(['probe', 'first eval', 'last eval'],
          [[probes.ROLES[k], _fmt(ys[0]), _fmt(ys[-1])] for k, (_, ys) in curves.items()])
  plots.figure(out_dir / 'copy_curves.png', [('copying during pretraining',
                                              [(probes.ROLES[k], xs, ys, '') for k, (xs, ys) in curves.items()],
                                              'pretraining step')])
  s.image('copy_curves.png')


def fact_curves(run: Run, s: 'Section', out_dir: Path) -> None:
  """The world facts known as pretraining and SFT train (``pretrain.fact_probe``, ``sft.fact_probe``)."""
  keys = ('facts_known[eval]', 'facts_known[other]')
  stages = [(stage, _stage_rows(run, stage)) for stage in ('pretrain', 'sft')]
  stages = [(stage, rows) for stage, rows in stages if any(keys[0] in r for r in rows)]
  if not stages:
    return
  s.text("World facts known as the model trains: each fact's right value against every other value its attribute "
         "takes, by log-likelihood (lm.probes; the eval's world questions, and as many other facts):")
  curves = [(stage, k, *plots.series(rows, k)) for stage, rows in stages for k in keys]
  s.table(['stage', 'facts', 'first eval', 'last eval'],
          [[stage, k[12:-1], _fmt(ys[0]), _fmt(ys[-1])] for stage, k, _, ys in curves if ys])
  plots.figure(out_dir / 'fact_curves.png', [(f'facts known during {stage}',
                                              [(k[12:-1], *plots.series(rows, k), '') for k in keys],
                                              f'{stage} step') for stage, rows in stages])
  s.image('fact_curves.png')


def skills_section(run: Run, out_dir: Path) -> Section:
  s = Section('Skills')
  copy_curves(run, s, out_dir)
  fact_curves(run, s, out_dir)
  skill_curves(run, s, out_dir)
  path = run.workdir / 'eval' / 'results.json'
  if 'eval' not in run.outputs or not path.is_file():
    s.text('No eval stage in this run.')
    return s
  results = _json(path)
  cards = results['models']
  names = list(cards)
  n = run.outputs['eval'].get('examples')
  s.text(f'Held-out eval prompts{f" ({n} per model)" if n else ""}, greedy, scored by the lab\'s gold scorers; '
         'columns are the models evaluated (base = pretrained, sft, rlhf, ...). Each value: mean [95% interval].')
  rows = []
  for label, key, better in SKILLS:
    values = [skill_value(cards[m], key) for m in names]
    if all(v is None or v != v for v in values):
      continue
    cells = [_interval(cards[m], key) or _fmt(v) for m, v in zip(names, values)]
    rows.append([label + (f' ({better} is better)' if better else '')] + cells)
  s.table(['skill'] + names, rows)
  for pair, diffs in results.get('differences', {}).items():
    s.text(f'{pair}, paired over the same prompts (mean [95% interval]):')
    s.table(['skill', pair], [[label, str(stats.Estimate(**diffs[key]))] for label, key, _ in SKILLS if key in diffs])
  traces = {m: _traces(run, m) for m in names}
  for family, key, title in BREAKDOWNS:
    table = breakdown_table(traces, family, key)
    if table:
      s.text(f'{title} (accuracy; variant and {key}):')
      s.table([f'{family}'] + names, [[label] + [_fmt(v) for v in values] for label, values in table])
    else:
      s.text(f'{title}: no {family} prompts in the eval traces.')
  sets = {m: {(x['family'], x['variant']): x for x in cards[m].get('sets', ())} for m in names}
  trivial = {(b['family'], b['variant']): b for b in results.get('baselines', ())}
  keys = sorted({k for v in sets.values() for k in v})
  if keys:
    s.text('Accuracy per eval set, beside the best trivial answer (empty, echo, constants, the most frequent gold '
           'answer):')
    s.table(['set (n)'] + names + ['best trivial answer'],
            [[f'{f}/{v} ({next(sets[m][(f, v)]["n"] for m in names if (f, v) in sets[m])})']
             + [_fmt(sets[m].get((f, v), {}).get('accuracy')) for m in names]
             + [f'{_fmt(trivial[(f, v)]["best_score"])} ({trivial[(f, v)]["best"]})' if (f, v) in trivial else '-']
             for f, v in keys])
  return s


def reward_section(run: Run) -> Section:
  s = Section('Reward model')
  out = run.outputs.get('reward')
  if out is None:
    s.text('No reward stage in this run.')
    return s
  s.text('Pairwise accuracy on held-out rankings (the panel\'s and the gold one); length correlations are within '
         'prompt, of log(1 + words) with each judge\'s preference (> 0: the judge likes longer responses).')
  s.table(['metric', 'value'], [[label, _fmt(out.get(key), 4)] for key, label in REWARD_KEYS if key in out])
  groups = [k[len('heldout_prompts['):-1] for k in out if k.startswith('heldout_prompts[')]
  groups = sorted(groups, key=lambda g: (g.startswith('domain:'), g))
  if groups:
    s.text('Per task family and domain, on the held-out rankings: how much the panel\'s raters agree (Kendall\'s W '
           'averaged over prompts, 1/R for raters ranking at random; Krippendorff\'s ordinal alpha, 0 for chance) and '
           'the reward model\'s pairwise accuracy against the panel and against gold (in subjective families the '
           'population\'s expected taste). Where raters agree least the reward model should learn least.')
    s.table(['family or domain', 'prompts', "Kendall's W", 'alpha', 'accuracy vs panel', 'accuracy vs gold'],
            [[g, _fmt(out.get(f'heldout_prompts[{g}]')), _fmt(out.get(f'heldout_kendall_w[{g}]')),
              _fmt(out.get(f'heldout_alpha[{g}]')), _fmt(out.get(f'heldout_panel_accuracy[{g}]')),
              _fmt(out.get(f'heldout_gold_accuracy[{g}]'))] for g in groups])
  return s


def _rlhf_figure(run: Run, rows: list[dict], algorithm: str, out_dir: Path):
  """``rlhf.png``: the figure the stage drew from the same metrics rows, copied; drawn where it left none."""
  drawn = run.workdir / 'rlhf' / rl_report.figure_name(algorithm)
  if drawn.is_file():
    shutil.copyfile(drawn, out_dir / 'rlhf.png')
  else:
    rl_report.figure(rows, algorithm, out_dir / 'rlhf.png')


def rlhf_section(run: Run, out_dir: Path) -> Section:
  s = Section('RLHF')
  out, rows = run.outputs.get('rlhf'), _stage_rows(run, 'rlhf')
  if out is None and not rows:
    s.text('No rlhf stage in this run.')
    return s
  algorithm = (out or {}).get('algorithm', run.config.get('rlhf', {}).get('algorithm', '?'))
  if not rows:
    s.text(f'The rlhf stage ({algorithm}) logged no metrics.')
    return s
  if algorithm == 'best_of_n':
    s.text('Best-of-n against the reward model: no training; KL = log n - (n - 1) / n.')
    s.table(['n', 'KL (nats)', 'proxy reward', 'gold reward'],
            [[r['step'], _fmt(r.get('kl')), _fmt(r.get('proxy_reward')), _fmt(r.get('gold_reward'))] for r in rows])
    _rlhf_figure(run, rows, algorithm, out_dir)
    s.image('rlhf.png')
    return s
  first, last = rows[0], rows[-1]
  s.text(f'{algorithm}: {len(rows)} iterations logged (step {first["step"]} to {last["step"]}). Proxy = the reward '
         'model (normalised on reference samples), gold = the lab\'s scorers; KL to the SFT reference, summed over '
         'the response (nats).')
  keys = [k for k in RLHF_KEYS if k in last or k in first]
  keys += sorted({k for r in (first, last) for k in r if k.startswith('acc[')})
  s.table(['metric', f'iteration {first["step"]}', f'iteration {last["step"]}'],
          [[k, _fmt(first.get(k)), _fmt(last.get(k))] for k in keys])
  _rlhf_figure(run, rows, algorithm, out_dir)
  s.image('rlhf.png')
  if (out or {}).get('report'):
    s.text(f'The stage\'s own report: {out["report"]}.')
  return s


def synthetic_section(run: Run) -> Section:
  s = Section('Synthetic data')
  out = run.outputs.get('synthetic')
  if out is None:
    s.text('No synthetic stage in this run.')
    return s
  s.text(f'{out.get("samples", "?")} responses sampled by the {out.get("source", "?")} model to '
         f'{out.get("prompts", "?")} new prompts, judged by {out.get("judge", "?")} (threshold '
         f'{out.get("threshold", "?")}); {out.get("kept", "?")} kept as SFT conversations '
         f'(acceptance {_fmt(out.get("acceptance_rate"))}).')
  fams = sorted(k[len('acceptance['):-1] for k in out if k.startswith('acceptance['))
  if fams:
    s.table(['family', 'acceptance rate', 'kept'],
            [[f, _fmt(out[f'acceptance[{f}]']), _fmt(out.get(f'kept[{f}]'))] for f in fams])
  path = run.workdir / 'eval' / 'results.json'
  cards = _json(path)['models'] if path.is_file() else {}
  if 'sft+synth' in cards and 'sft+orig' in cards:
    s.text('What the synthetic data adds: continued SFT on original + synthetic data against continued SFT on the '
           'original data only, for the same steps.')
    rows = []
    for label, key, better in SKILLS:
      a, b = skill_value(cards['sft+orig'], key), skill_value(cards['sft+synth'], key)
      if a is not None and b is not None and a == a and b == b:
        rows.append([label + (f' ({better} is better)' if better else ''), _fmt(a), _fmt(b), _fmt(b - a)])
    s.table(['skill', 'sft+orig', 'sft+synth', 'difference'], rows)
  else:
    s.text('No eval of both sft+orig and sft+synth in this run.')
  return s


def _model_of(run: Run, stage: str | None) -> ModelConfig | None:
  fields = (run.outputs.get(stage) or {}).get('model') if stage else None
  fields = fields or run.config.get('model')
  if not fields:
    return None
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  return ModelConfig(**{k: v for k, v in fields.items() if k in known})


def throughput_section(run: Run, peak_flops: float | None = None) -> Section:
  s = Section('Time and throughput')
  if not run.outputs:
    s.text('No stage finished in this run.')
    return s
  total = sum(o.get('wall_s', 0.0) for o in run.outputs.values())
  devices = next((o['devices'] for o in run.outputs.values() if 'devices' in o), None)
  model = _model_of(run, None)
  peak, peak_note = None, ''
  table, has_mfu, compile_total = [], False, 0.0
  for stage, out in run.outputs.items():
    rows = [r for r in _stage_rows(run, stage) if 'tokens_per_s' in r]
    tps = statistics.median(r['tokens_per_s'] for r in rows) if rows else None
    fill = [r['non_padding'] for r in rows if 'non_padding' in r]
    compile_s = out.get('compile_s')  # all of the stage's; a run from before it was kept: the train steps'
    if compile_s is None:
      compile_s = max((r['compile_s'] for r in rows if 'compile_s' in r), default=None)  # cumulative per stage
    compile_total += compile_s or 0.0
    fpt = mfu = None
    section = run.config.get(stage)
    seq_len = out.get('seq_len') or (section.get('seq_len') if isinstance(section, dict) else None)
    if tps and seq_len and 'model' in out and stage not in NOT_TRAINING:
      fpt = flops_per_token(_model_of(run, stage), seq_len, out.get('trainable_params') if out.get('lora') else None)
      if peak is None and not peak_note:
        peak, peak_note = peak_of(devices, model.dtype if model else 'float32', peak_flops)
      mfu = tps * fpt / peak if peak else None
      has_mfu = True
    wall = out.get('wall_s')
    table.append([stage, _fmt(wall, 1), f'{wall / total:.1%}' if wall is not None and total else '-',
                  _fmt(out.get('step', out.get('iterations'))), _fmt(tps, 0),
                  f'{statistics.median(fill):.1%}' if fill else '-', _fmt(compile_s, 1),
                  f'{fpt:,}' if fpt else '-', f'{mfu:.2%}' if mfu is not None else '-'])
  recorded = any('wall_s' in o for o in run.outputs.values())
  s.text((f'Total wall time of the stages: {total:.1f} s (a resumed stage counts its last attempt). ' if recorded
          else 'The stages did not record their wall time (a run from before the launcher kept it). ')
         + 'tokens/s is the median over logged intervals of real tokens (padding excluded; rlhf: response '
         'tokens per second of sampling, scoring and updating); non-padding is the share of the rows\' slots that '
         'hold tokens (rlhf: prompt and response tokens of the rows scored and updated on). FLOPs/token = '
         '6 N + 12 L T d_attn (PaLM appendix B; N = params in matmuls, T = the stage\'s sequence length; '
         'LoRA stages 4 N + 6 N_adapters + 12 L T d_attn). '
         'compile s: tracing, lowering and XLA compiling (or loading from the workdir\'s cache) every program the '
         f'stage ran. Compile time in all: {compile_total:.1f} s.')
  if has_mfu:
    s.text(f'MFU = tokens/s x FLOPs/token / peak; {peak_note}.')
  s.table(['stage', 'wall s', 'share', 'steps', 'tokens/s', 'non-padding', 'compile s', 'FLOPs/token', 'MFU'], table)
  return s


# ------------------------------------------------------------------------------ writing

def _markdown(title: str, sections) -> str:
  lines = [f'# {title}', '']
  for sec in sections:
    lines += [f'## {sec.title}', '']
    for block in sec.blocks:
      if block[0] == 'text':
        lines += [block[1], '']
      elif block[0] == 'table':
        header, rows = block[1], block[2]
        lines += ['| ' + ' | '.join(map(str, header)) + ' |', '|---' * len(header) + '|']
        lines += ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows] + ['']
      elif block[0] == 'image':
        lines += [f'![{block[1][:-4]}]({block[1]})', '']
      elif block[0] == 'links':
        lines += [f'- [{text}]({href})' for text, href in block[1]] + ['']
  return '\n'.join(lines)


def _html(title: str, sections, out_dir: Path) -> str:
  e = html.escape
  parts = [f'<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title><style>'
           'body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}'
           'table{border-collapse:collapse;margin:0.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;'
           'text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}</style></head><body>',
           f'<h1>{e(title)}</h1>']
  for sec in sections:
    parts.append(f'<h2>{e(sec.title)}</h2>')
    for block in sec.blocks:
      if block[0] == 'text':
        parts.append(f'<p>{e(block[1])}</p>')
      elif block[0] == 'table':
        head = ''.join(f'<th>{e(str(h))}</th>' for h in block[1])
        body = ''.join('<tr>' + ''.join(f'<td>{e(str(c))}</td>' for c in r) + '</tr>' for r in block[2])
        parts.append(f'<table><tr>{head}</tr>{body}</table>')
      elif block[0] == 'image':
        data = base64.b64encode((out_dir / block[1]).read_bytes()).decode('ascii')
        parts.append(f'<img alt="{e(block[1])}" src="data:image/png;base64,{data}">')
      elif block[0] == 'links':
        parts.append('<ul>' + ''.join(f'<li><a href="{e(h)}">{e(t)}</a></li>' for t, h in block[1]) + '</ul>')
  return '\n'.join(parts) + '\n</body></html>\n'


def _write(out_dir: Path, title: str, sections) -> str:
  (out_dir / 'report.md').write_text(_markdown(title, sections))
  (out_dir / 'report.html').write_text(_html(title, sections, out_dir))
  return str(out_dir / 'report.md')


def _sweep_sections(workdir: Path) -> list[Section]:
  comparison = Section('Comparison')
  lines = [line for line in (workdir / 'comparison.md').read_text().splitlines() if line.startswith('|')]
  if len(lines) >= 2:
    cells = lambda line: [c.strip() for c in line.strip().strip('|').split('|')]
    comparison.table(cells(lines[0]), [cells(line) for line in lines[2:]])
  else:
    comparison.text('comparison.md has no table.')
  for image in ('comparison.png', 'comparison_curves.png'):
    if (workdir / image).is_file():
      comparison.image(image)
  variants = Section('Variants')
  links, walls = [], []
  for d in sorted(p.parent for p in workdir.glob('*/config.json')):
    outputs = [_json(p) for p in d.glob('*/outputs.json')]
    walls.append([d.name, _fmt(sum(o.get('wall_s', 0.0) for o in outputs), 1)])
    if (d / 'report.md').is_file():
      links.append((f'{d.name}: report', f'{d.name}/report.html'))
  variants.blocks.append(('links', links))
  variants.table(['run', 'wall s of its stages'], walls)
  return [comparison, variants]


def write(workdir, peak_flops: float | None = None) -> str:
  """Writes ``report.md``, its PNGs and ``report.html`` in ``workdir``; returns the report's path."""
  workdir = Path(workdir)
  if not (workdir / 'config.json').is_file() and (workdir / 'comparison.md').is_file():
    return _write(workdir, f'Sweep: {workdir.name}', _sweep_sections(workdir))
  run = load(workdir)
  sections = [run_section(run), loss_section(run, workdir), skills_section(run, workdir), reward_section(run),
              rlhf_section(run, workdir), synthetic_section(run), throughput_section(run, peak_flops)]
  return _write(workdir, f'Report: {workdir.name}', sections)
