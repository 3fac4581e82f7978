"""The report card (lm.report) on hand-written workdirs: every section, the tables' numbers equal the
inputs, valid PNGs, a self-contained HTML page, one-line notes for what a run did not do."""

import base64
import json
import re
import statistics
from pathlib import Path

import numpy as np
import pytest

from lm import hardware, metrics
from lm import outputs as lm_outputs
from lm.cli import report as report_cli
from lm.report import card as report
from lm.report import comparison
from lm.rl import report as rl_report

MODEL = dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128, max_seq_len=128)
DEVICES = {'count': 8, 'kind': 'cpu'}
CARDS = {  # eval/results.json: model -> card
    name: {'metrics': {'accuracy': 0.1 + i / 10, 'format_following': 0.2 + i / 10, 'world_qa_accuracy': 0.05 * i,
                       'hallucination_rate': 1.0 - 0.2 * i, 'harmful_refusal_rate': 0.25 * i,
                       'over_refusal_rate': 0.125 * i, 'length_error_words': 20.0 - 3 * i,
                       'length_error_lines': 4.0 - i / 2, 'translation_exact_match': 0.0,
                       'tool_calls_per_answer': 0.5 * i, 'copies_the_sum': 0.25 * i, 'digit_steps_right': 0.75 - i / 8,
                       'copies_the_word': i / 5, 'letter_steps_right': 1 - i / 5,
                       'look_up_names_the_subject': 0.0},
           'sets': [{'family': 'arithmetic', 'variant': 'direct', 'n': 2, 'accuracy': 0.5},
                    {'family': 'arithmetic', 'variant': 'thinking', 'n': 4, 'accuracy': 0.25 * i},
                    {'family': 'char_count', 'variant': 'thinking', 'n': 3, 'accuracy': i / 3}]}
    for i, name in enumerate(['base', 'sft', 'rlhf', 'sft+orig', 'sft+synth'])}
TRACES = {  # model -> [(family, variant, meta, score)]
    'base': [('arithmetic', 'direct', {'digits': 1}, 1.0), ('arithmetic', 'direct', {'digits': 1}, 0.0),
             ('arithmetic', 'direct', {'digits': 3}, 0.0), ('char_count', 'thinking', {'length': 5}, 1.0)],
    'sft': [('arithmetic', 'direct', {'digits': 1}, 1.0), ('arithmetic', 'direct', {'digits': 1}, 1.0),
            ('arithmetic', 'direct', {'digits': 3}, 1.0), ('char_count', 'thinking', {'length': 5}, 0.0),
            ('char_count', 'thinking', {'length': 7}, 1.0)],
}
REWARD = {'eval_panel_accuracy': 0.6875, 'eval_gold_accuracy': 0.8125, 'length_correlation_reward': 0.4375,
          'length_correlation_panel': 0.375, 'length_correlation_gold': -0.0625}
RLHF_ROWS = [{'stage': 'rlhf', 'step': i, 'proxy_reward': 0.1 * i, 'gold_reward': 0.3 - 0.05 * (i - 2) ** 2,
              'kl': 0.5 * i, 'response_length': 30.0 + i, 'harmful_refusal_rate': 0.5, 'over_refusal_rate': 0.25,
              'acc[arithmetic]': 0.125 * i, 'loss': 0.01, 'tokens_per_s': 100.0 * i, 'non_padding': 0.2 + 0.01 * i}
             for i in (1, 2, 3, 4)]
SYNTHETIC = {'source': 'sft', 'judge': 'gold', 'threshold': 1.0, 'prompts': 40, 'samples': 160, 'accepted': 30,
             'kept': 20, 'acceptance_rate': 0.1875, 'acceptance[arithmetic]': 0.25, 'kept[arithmetic]': 12,
             'acceptance[world_qa]': 0.125, 'kept[world_qa]': 8}
WALL = {'data': 2.0, 'tokenizer': 1.0, 'pretrain': 10.0, 'sft': 8.0, 'reward': 6.0, 'rlhf': 12.0, 'synthetic': 4.0,
        'sft_original': 3.0, 'sft_synthetic': 3.0, 'eval': 1.0}
TRAIN_TPS = {'pretrain': [1000.0, 3000.0, 2000.0], 'sft': [500.0, 700.0], 'reward': [400.0]}
COMPILE = {'reward': 9.0, 'rlhf': 4.0, 'eval': 1.5}  # outputs' compile_s (the others: from before the launcher kept it)


def _train_rows(stage, tps):
  rows = []
  for i, t in enumerate(tps):
    row = {'stage': stage, 'step': 4 * (i + 1), 'loss': 6.0 - i, 'tokens_per_s': t, 'grad_norm': 1.0,
           'non_padding': 0.5 + 0.1 * i}
    if i == 0:
      row['compile_s'] = 7.5
    rows += [row, {'stage': stage, 'step': 4 * (i + 1), 'eval_loss': 6.5 - i}]
  return rows


def write_run(workdir, stages=tuple(WALL)):
  """A workdir as the launcher leaves it, for ``stages`` (a prefix of the lifecycle)."""
  workdir.mkdir(parents=True, exist_ok=True)
  config = {'seed': 0, 'stages': list(stages), 'model': MODEL, 'pretrain': {'seq_len': 64},
            'sft': {'seq_len': 128}, 'reward': {'seq_len': 128}, 'rlhf': {'algorithm': 'ppo'}}
  (workdir / 'config.json').write_text(json.dumps(config))
  trained = dict(checkpoint_dir='', tokenizer='', model=MODEL)
  outs = {'data': lm_outputs.Data(tfds_dir=''), 'tokenizer': lm_outputs.Tokenizer(path='', vocab_size=512),
          'pretrain': lm_outputs.Model(**trained, metrics={'step': 12, 'cut_from_doc_start': 0.25}),
          'sft': lm_outputs.Model(**trained, metrics={'step': 8}),
          'reward': lm_outputs.Reward(**dict(trained, model={**MODEL, 'lm_head': False, 'scalar_head': True}),
                                      reward_mean=0.0, reward_std=1.0, metrics={'step': 4, **REWARD}),
          'rlhf': lm_outputs.Rlhf(**trained, algorithm='ppo', metrics={'iterations': 4}),
          'synthetic': lm_outputs.Synthetic(tfds_dir='', samples_file='', metrics=SYNTHETIC),
          'sft_original': lm_outputs.Model(**trained), 'sft_synthetic': lm_outputs.Model(**trained),
          'eval': lm_outputs.Eval(results='', report='', metrics={'examples': 12})}
  rows = []
  for stage in stages:
    out = outs[stage]
    out.wall_s, out.devices, out.compile_s = WALL[stage], DEVICES, COMPILE.get(stage)
    lm_outputs.save(out, workdir / stage / 'outputs.json')
    if stage in TRAIN_TPS:
      rows += _train_rows(stage, TRAIN_TPS[stage])
    if stage == 'rlhf':
      rows += RLHF_ROWS
  (workdir / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  if 'eval' in stages:
    (workdir / 'eval' / 'results.json').write_text(json.dumps({'models': CARDS}))
    for name, rows in TRACES.items():
      (workdir / 'eval' / f'traces_{name}.jsonl').write_text(''.join(
          json.dumps({'family': f, 'variant': v, 'meta': m, 'score': s}) + '\n' for f, v, m, s in rows))
  return workdir


def sections(text: str) -> dict:
  """``## title`` -> the lines under it (blank lines dropped)."""
  out, title = {}, None
  for line in text.splitlines():
    if line.startswith('## '):
      title = line[3:]
      out[title] = []
    elif title and line.strip():
      out[title].append(line)
  return out


def table(lines, first_cell: str) -> dict:
  """The markdown table whose header starts with ``first_cell``: {row label: [cells]} plus 'header'."""
  start = next(i for i, line in enumerate(lines) if line.startswith(f'| {first_cell} |'))
  cells = lambda line: [c.strip() for c in line.strip().strip('|').split('|')]
  out = {'header': cells(lines[start])}
  for line in lines[start + 2:]:
    if not line.startswith('|'):
      break
    out[cells(line)[0]] = cells(line)[1:]
  return out


@pytest.fixture(scope='module')
def full(tmp_path_factory):
  workdir = write_run(tmp_path_factory.mktemp('run'))
  path = report.write(workdir, peak_flops=1e9)
  return workdir, sections((workdir / 'report.md').read_text()), path


def test_every_section_is_there_in_markdown_and_html(full):
  workdir, secs, path = full
  assert path == str(workdir / 'report.md')
  assert list(secs) == list(report.SECTIONS)
  page = (workdir / 'report.html').read_text()
  assert [m for m in re.findall(r'<h2>(.*?)</h2>', page)] == list(report.SECTIONS)


def test_the_share_of_pretraining_tokens_cut_from_their_document_start_is_stated(full):
  _, secs, _ = full
  assert ('Pretraining rows of 64 tokens: 25% of their tokens sit in a row their document began before and cannot '
          'attend to its start.') in secs['Loss curves']


def test_skills_table_equals_the_eval_results(full):
  _, secs, _ = full
  skills = table(secs['Skills'], 'skill')
  names = list(CARDS)
  assert skills['header'] == ['skill'] + names
  for label, key, better in report.SKILLS:
    label += f' ({better} is better)' if better else ''
    if key.startswith('family:'):
      continue
    assert skills[label] == [f'{CARDS[m]["metrics"][key]:.3f}' for m in names], label
  # family accuracy: the sets weighted by their n (arithmetic: 2 direct at 0.5, 4 thinking at 0.25 i)
  assert skills['arithmetic (higher is better)'] == [f'{(2 * 0.5 + 4 * 0.25 * i) / 6:.3f}' for i in range(5)]
  assert 'word problems (higher is better)' not in skills  # no word_problem set was evaluated
  assert skills['character counting (higher is better)'] == [f'{i / 3:.3f}' for i in range(5)]


def test_breakdowns_by_digit_count_and_word_length_come_from_the_traces(full):
  _, secs, _ = full
  digits = table(secs['Skills'], 'arithmetic')
  assert digits['header'] == ['arithmetic'] + list(CARDS)
  # base: 1 digit 1 of 2 right, 3 digits 0 of 1; sft: all right; the others have no traces
  assert digits['direct, digits 1 (n=2)'] == ['0.500', '1.000', '-', '-', '-']
  assert digits['direct, digits 3 (n=1)'] == ['0.000', '1.000', '-', '-', '-']
  counting = table(secs['Skills'], 'char_count')
  assert counting['thinking, length 5 (n=1)'] == ['1.000', '0.000', '-', '-', '-']
  assert counting['thinking, length 7 (n=1)'] == ['-', '1.000', '-', '-', '-']


def test_reward_rlhf_and_synthetic_numbers(full):
  workdir, secs, _ = full
  rewards = table(secs['Reward model'], 'metric')
  labels = dict(report.REWARD_KEYS)
  for key, value in REWARD.items():
    assert rewards[labels[key]] == [f'{value:.4f}']
  rl = table(secs['RLHF'], 'metric')
  assert rl['header'] == ['metric', 'iteration 1', 'iteration 4']
  for key in ('proxy_reward', 'gold_reward', 'kl', 'response_length', 'acc[arithmetic]', 'over_refusal_rate'):
    assert rl[key] == [f'{RLHF_ROWS[0][key]:.3f}', f'{RLHF_ROWS[-1][key]:.3f}'], key
  synth = table(secs['Synthetic data'], 'family')
  assert synth['arithmetic'] == ['0.250', '12'] and synth['world_qa'] == ['0.125', '8']
  adds = table(secs['Synthetic data'], 'skill')
  a, b = CARDS['sft+orig']['metrics']['accuracy'], CARDS['sft+synth']['metrics']['accuracy']
  assert adds['mean gold accuracy (higher is better)'] == [f'{a:.3f}', f'{b:.3f}', f'{b - a:.3f}']


def test_time_throughput_and_mfu_by_hand(full):
  _, secs, _ = full
  times = table(secs['Time and throughput'], 'stage')
  total = sum(WALL.values())
  assert f'Total wall time of the stages: {total:.1f} s (a resumed' in secs['Time and throughput'][0]
  for stage, wall in WALL.items():
    assert times[stage][:2] == [f'{wall:.1f}', f'{wall / total:.1%}'], stage
  # the test model: per layer 2*64 norms + 64*(4+2*2)*16 qkv + 4*16*64 out + 3*64*128 mlp = 36,992;
  # 2 layers + final norm = 74,048, + the tied head 64*512 = 106,816 params in matmuls
  n_policy, n_reward = 2 * 36_992 + 64 + 64 * 512, 2 * 36_992 + 64 + 65
  for stage, n, seq in (('pretrain', n_policy, 64), ('sft', n_policy, 128), ('reward', n_reward, 128)):
    fpt = 6 * n + 12 * 2 * seq * 4 * 16
    tps = statistics.median(TRAIN_TPS[stage])
    fill = statistics.median(0.5 + 0.1 * i for i in range(len(TRAIN_TPS[stage])))
    compiled = f'{COMPILE.get(stage, 7.5):.1f}'  # the stage's own, else its train steps' (7.5 in the rows)
    assert times[stage][3:] == [f'{tps:.0f}', f'{fill:.1%}', compiled, f'{fpt:,}', f'{tps * fpt / 1e9:.2%}'], stage
  assert times['pretrain'][5:7] == ['7.5', '739,200']
  assert [times[s][5] for s in ('rlhf', 'eval', 'data')] == ['4.0', '1.5', '-']
  assert 'Compile time in all: 29.5 s' in ' '.join(secs['Time and throughput'])  # 7.5 + 7.5 + 9 + 4 + 1.5
  assert times['rlhf'][3:5] == [f'{statistics.median(r["tokens_per_s"] for r in RLHF_ROWS):.0f}', '22.5%']
  assert times['rlhf'][-2:] == ['-', '-']  # sampling and training mixed: no MFU


def test_cpu_peak_is_measured_at_the_dtype_auto_resolves_to():
  dtype = hardware.resolve_dtype('auto')
  peak, note = report.peak_of({'kind': 'cpu', 'count': 8}, 'auto')
  assert f'a 1024^3 {dtype} matmul' in note and 1e8 < peak < 1e14, (peak, note)


def test_pngs_are_valid_and_the_html_embeds_them(full):
  import matplotlib.image
  workdir, _, _ = full
  page = (workdir / 'report.html').read_text()
  embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
  pngs = ['loss_curves.png', 'rlhf.png']
  assert len(embedded) == len(pngs) and 'src="loss_curves.png"' not in page
  for name, data in zip(pngs, embedded):
    raw = (workdir / name).read_bytes()
    assert raw[:8] == b'\x89PNG\r\n\x1a\n' and base64.b64decode(data) == raw
    image = matplotlib.image.imread(workdir / name)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and np.ptp(image) > 0


def test_the_rlhf_figure_is_the_stages_own_where_it_drew_one(full, tmp_path):
  workdir = write_run(tmp_path / 'run')
  drawn = rl_report.figure(metrics.read(workdir, 'rlhf'), 'ppo', workdir / 'rlhf' / 'rlhf.png')
  drawn.write_bytes(drawn.read_bytes() + b'the stage')  # marked: a copy carries the mark, a new drawing does not
  report.write(workdir, peak_flops=1e9)
  assert (workdir / 'rlhf.png').read_bytes() == drawn.read_bytes()
  assert (full[0] / 'rlhf.png').read_bytes() == drawn.read_bytes()[:-len(b'the stage')]  # drawn from the same rows


def test_missing_stages_get_one_line_notes(tmp_path):
  workdir = write_run(tmp_path, stages=('data', 'tokenizer', 'pretrain'))
  report.write(workdir, peak_flops=1e9)
  secs = sections((workdir / 'report.md').read_text())
  assert list(secs) == list(report.SECTIONS)
  assert secs['Skills'] == ['No eval stage in this run.']
  assert secs['Reward model'] == ['No reward stage in this run.']
  assert secs['RLHF'] == ['No rlhf stage in this run.']
  assert secs['Synthetic data'] == ['No synthetic stage in this run.']
  assert list(table(secs['Time and throughput'], 'stage'))[1:] == ['data', 'tokenizer', 'pretrain']
  assert not (workdir / 'rlhf.png').exists() and (workdir / 'loss_curves.png').exists()

  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'config.json').write_text(json.dumps({'stages': ['data']}))
  report.write(empty)
  secs = sections((empty / 'report.md').read_text())
  assert secs['Loss curves'] == ['No training stage logged losses in this run.']
  assert secs['Time and throughput'] == ['No stage finished in this run.']


def test_a_sweep_links_its_variants_and_shared_stages_feed_each_variant(tmp_path):
  write_run(tmp_path / 'shared', stages=('data', 'tokenizer', 'pretrain'))
  for name in ('a', 'b'):
    write_run(tmp_path / name, stages=('sft',))
    config = json.loads((tmp_path / name / 'config.json').read_text())
    config['shared_stages'] = ['data', 'tokenizer', 'pretrain']
    (tmp_path / name / 'config.json').write_text(json.dumps(config))
    report.write(tmp_path / name, peak_flops=1e9)
  (tmp_path / 'comparison.md').write_text('| variant | sft.loss |\n|---|---|\n| a | 1.5 |\n| b | 2.5 |\n')
  report.write(tmp_path)
  text = (tmp_path / 'report.md').read_text()
  secs = sections(text)
  assert table(secs['Comparison'], 'variant') == {'header': ['variant', 'sft.loss'], 'a': ['1.5'], 'b': ['2.5']}
  assert '- [a: report](a/report.html)' in text and '- [b: report](b/report.html)' in text
  walls = table(secs['Variants'], 'run')
  assert walls['a'] == [f'{WALL["sft"]:.1f}'] and walls['shared'] == [f'{2.0 + 1.0 + 10.0:.1f}']
  variant = sections((tmp_path / 'a' / 'report.md').read_text())
  times = table(variant['Time and throughput'], 'stage')
  assert list(times)[1:] == ['data', 'tokenizer', 'pretrain', 'sft']  # the shared ones first
  assert [line for line in variant['Loss curves'] if line.startswith('| pretrain |')]


def test_not_a_run_is_a_one_line_error(tmp_path, capsys):
  with pytest.raises(SystemExit, match=f'lm.report: error: {tmp_path / "config.json"} not found: not a run directory'):
    report_cli.main([f'--workdir={tmp_path}'])


def test_a_lora_stage_is_charged_what_it_computes():
  from lm.model.transformer import ModelConfig
  model = ModelConfig(**MODEL)
  full = report.flops_per_token(model, 128)
  lora = report.flops_per_token(model, 128, trainable=1000)
  n = (full - 12 * 2 * 128 * 4 * 16) // 6  # the params in matmuls
  assert lora == 4 * n + 6 * 1000 + 12 * 2 * 128 * 4 * 16  # no weight gradients of the frozen base


def test_skill_curves_are_plotted_from_the_sft_probe(tmp_path):
  workdir = write_run(tmp_path / 'run')
  rows = [json.dumps({'stage': 'sft', 'step': s, 'skill[arithmetic/direct]': a, 'skill[world_qa/direct]': w}) + '\n'
          for s, a, w in ((4, 0.0, 0.1), (8, 0.25, 0.3))]
  with open(workdir / 'metrics.jsonl', 'a') as f:
    f.writelines(rows)
  secs = sections(Path(report.write(workdir, peak_flops=1e9)).read_text())
  assert any('Skills as SFT trains' in line for line in secs['Skills'])
  assert (workdir / 'skill_curves.png').read_bytes()[:4] == b'\x89PNG'


def test_copy_curves_tabulate_the_first_and_last_pretraining_probe(tmp_path):
  workdir = write_run(tmp_path / 'run')
  rows = [json.dumps({'stage': 'pretrain', 'step': s, 'copy[random]': r, 'copy[operand]': o}) + '\n'
          for s, r, o in ((4, 0.0, 0.1), (8, 0.5, 0.75))]
  with open(workdir / 'metrics.jsonl', 'a') as f:
    f.writelines(rows)
  secs = sections(Path(report.write(workdir, peak_flops=1e9)).read_text())
  table = [line for line in secs['Skills'] if line.startswith('| a random') or line.startswith('| the digit')]
  assert table == ['| a random string, its second copy | 0.000 | 0.500 |',
                   "| the digit steps' operands, by place | 0.100 | 0.750 |"]
  assert (workdir / 'copy_curves.png').read_bytes()[:4] == b'\x89PNG'


def test_fact_curves_tabulate_the_facts_known_as_pretraining_and_sft_train(tmp_path):
  workdir = write_run(tmp_path / 'run')
  rows = [json.dumps({'stage': stage, 'step': s, 'facts_known[eval]': e, 'facts_known[other]': o}) + '\n'
          for stage, s, e, o in (('pretrain', 4, 0.25, 0.5), ('pretrain', 8, 0.75, 1.0), ('sft', 4, 0.5, 0.75),
                                 ('sft', 8, 0.25, 0.5))]
  with open(workdir / 'metrics.jsonl', 'a') as f:
    f.writelines(rows)
  secs = sections(Path(report.write(workdir, peak_flops=1e9)).read_text())
  table = [line for line in secs['Skills'] if line.startswith(('| pretrain', '| sft'))]
  assert table == ['| pretrain | eval | 0.250 | 0.750 |', '| pretrain | other | 0.500 | 1.000 |',
                   '| sft | eval | 0.500 | 0.250 |', '| sft | other | 0.750 | 0.500 |']
  assert (workdir / 'fact_curves.png').read_bytes()[:4] == b'\x89PNG'


def test_comparison_cells_show_intervals_and_curves_join_a_series(tmp_path):
  def run(tokens, acc, low, high):
    return {'pretrain': lm_outputs.Model(checkpoint_dir='', model={}, tokenizer='', metrics={'tokens_seen': tokens}),
            'eval': lm_outputs.Eval(results='', report='', metrics={
                'sft.acc[world_qa/direct]': acc, 'sft.acc[world_qa/direct].low': low,
                'sft.acc[world_qa/direct].high': high, 'examples': 10})}
  results = {'small@1': run(100, 0.25, 0.1, 0.4), 'small@2': run(200, 0.5, 0.3, 0.7), 'big@1': run(100, 0.75, 0.6, 0.9)}
  lines = comparison.table(results).splitlines()
  assert lines[0] == ('| variant | pretrain.wall_s | pretrain.tokens_seen | eval.wall_s | '
                      'eval.sft.acc[world_qa/direct] | eval.examples |')  # the bounds are in their cell
  assert lines[3] == '| small@2 | 0 | 200 | 0 | 0.500 [0.300, 0.700] | 10 |'
  # a line per series, sorted by x, its interval as the band; a series missing a bound has no band
  acc = 'eval.sft.acc[world_qa/direct]'
  assert comparison.series(results, 'pretrain.tokens_seen', acc) == [
      ('small', [100, 200], [0.25, 0.5], 'o-', ([0.1, 0.3], [0.4, 0.7])), ('big', [100], [0.75], 'o-', ([0.6], [0.9]))]
  del results['small@1']['eval'].metrics['sft.acc[world_qa/direct].high']
  assert comparison.series(results, 'pretrain.tokens_seen', acc)[0] == ('small', [100, 200], [0.25, 0.5], 'o-', None)
  path = tmp_path / 'curves.png'
  assert comparison.curves(results, 'pretrain.tokens_seen', (acc,), path)
  assert path.read_bytes()[:4] == b'\x89PNG'
  assert not comparison.curves(results, 'pretrain.tokens_seen', ('eval.nothing',), tmp_path / 'none.png')
