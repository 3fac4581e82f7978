"""``python -m lm.benchmark``: EleutherAI's harness on an lm workdir (a tiny imported Llama 3 with a
tokenizer built here), on local task files written here (yaml + jsonl; nothing downloads). The
harness's loglikelihoods, rolling loglikelihoods and greedy generations are held to the model's own
forward, one unpadded sequence at a time in float64 (no cache, no batching). Needs the [eval] and
[interop] extras."""

import json
import re

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip('lm_eval')
torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from lm.cli import benchmark  # noqa: E402
from lm.inference import harness, serving  # noqa: E402
from lm.interop import convert  # noqa: E402
from tests.conftest import jitted_logits  # noqa: E402
from tests.test_hf_tokenizers import write_bpe  # noqa: E402
from tests.test_interop import SMALL  # noqa: E402

pytestmark = pytest.mark.slow  # whole stages or runs: python -m pytest tests -m 'not slow' leaves them out

MC = [{'question': 'What is 12 + 30?', 'choices': [' 42', ' 41', ' words'], 'answer': 0},
      {'question': 'The cat sat on the', 'choices': [' mat.', ' sea.'], 'answer': 1},
      {'question': 'Hello! How are you', 'choices': [' today?', ' fine', ' Orlen'], 'answer': 2}]
GEN = [{'question': 'What is the capital of Veltia?', 'answer': 'Orlen'}, {'question': 'Numbers?', 'answer': '42'}]
PPL = [{'text': 'The cat sat on the mat. ' * 30}, {'text': 'Hello!'}]  # the first spans several 64-token windows
TASKS = {
    'tiny_mc': ('mc', MC, {'output_type': 'multiple_choice', 'doc_to_text': '{{question}}',
                           'doc_to_choice': '{{choices}}', 'doc_to_target': '{{answer}}',
                           'metric_list': [{'metric': 'acc'}]}),
    'tiny_gen': ('gen', GEN, {'output_type': 'generate_until', 'doc_to_text': 'Q: {{question}}\nA:',
                              'doc_to_target': '{{answer}}', 'metric_list': [{'metric': 'exact_match'}],
                              'generation_kwargs': {'until': ['\n', '.'], 'max_gen_toks': 6, 'do_sample': False}}),
    'tiny_ppl': ('ppl', PPL, {'output_type': 'loglikelihood_rolling', 'doc_to_text': '', 'doc_to_target': '{{text}}',
                              'metric_list': [{'metric': 'word_perplexity'}]}),
}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('bench')
  hf = write_bpe(tmp / 'hf', 'llama3')
  vocab = len(transformers.AutoTokenizer.from_pretrained(hf))
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**SMALL, 'vocab_size': vocab}))
  with torch.no_grad():
    for p in model.parameters():
      p.normal_(0.0, 0.3)  # confident, varied predictions: choices and greedy tokens differ
  model.save_pretrained(hf)
  convert.import_checkpoint(hf, tmp / 'run')
  tasks = tmp / 'tasks'
  tasks.mkdir()
  for name, (stem, docs, spec) in TASKS.items():
    (tasks / f'{stem}.jsonl').write_text(''.join(json.dumps(d) + '\n' for d in docs))
    spec = {'task': name, 'dataset_path': 'json', 'test_split': 'test',
            'dataset_kwargs': {'data_files': {'test': str(tasks / f'{stem}.jsonl')}}, **spec}
    (tasks / f'{stem}.yaml').write_text(json.dumps(spec))  # JSON is YAML
  return tmp / 'run', tasks


def logprobs(served, ids) -> np.ndarray:
  """float64 log-softmax of the model's forward over one sequence: [T, V]. It runs alone in a row of
  max_seq_len, one compiled program for every length (causal: the zeros after it change none of its logits)."""
  row = list(ids) + [0] * (served.model.config.max_seq_len - len(ids))
  logits = np.asarray(jitted_logits(served.model)(served.params, jnp.asarray([row], jnp.int32))[0, :len(ids)],
                      np.float64)
  return logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(
      -1, keepdims=True)


def test_benchmark_matches_the_models_own_forward(run, capsys):
  workdir, tasks = run
  out = benchmark.main([f'--workdir={workdir}', '--tasks=tiny_mc,tiny_gen,tiny_ppl', f'--include_path={tasks}',
                        '--batch_size=8'])
  assert out['stage'] == 'import'
  written = json.loads((workdir / 'benchmark' / 'import.json').read_text())
  assert written['results'] == json.loads(json.dumps(out['results'], default=str))
  assert 'tiny_mc' in capsys.readouterr().out

  served = serving.load(workdir, 'import')
  tok, bos = served.tokenizer, served.tokenizer.bos_id
  assert served.model.config.max_seq_len == 64

  # multiple choice: log p(choice | question) by hand, and accuracy from those numbers
  model = harness.Harness(served)
  correct = []
  for doc in MC:
    scores = []
    for choice in doc['choices']:
      ctx = tok.encode(doc['question'])
      cont = tok.encode(doc['question'] + choice)[len(ctx):]
      seq = ctx + cont
      lp = logprobs(served, seq[:-1])
      scores.append(sum(lp[len(ctx) - 1 + j, cont[j]] for j in range(len(cont))))
    got = [s for s, _ in model.score([model.pair_ids(doc['question'], c) for c in doc['choices']])]
    np.testing.assert_allclose(got, scores, atol=1e-4)
    correct.append(int(np.argmax(scores)) == doc['answer'])
  assert out['results']['tiny_mc']['acc,none'] == pytest.approx(np.mean(correct))
  assert 0 < np.mean(correct) < 1  # the test tells right from wrong

  # rolling: every token of the text predicted once, after [bos], in windows of max_seq_len
  expected = []
  for doc in PPL:
    ids = tok.encode(doc['text'])
    stream, total = [bos] + ids, 0.0
    for s in range(0, len(ids), 64):  # ids[s:e] scored after the 64 tokens before ids[e - 1] (the last: full context)
      e = min(s + 64, len(ids))
      lp = logprobs(served, stream[max(0, e - 64):e])
      total += sum(lp[len(lp) - (e - s) + j, ids[s + j]] for j in range(e - s))
    expected.append(total)
  assert len(tok.encode(PPL[0]['text'])) > 128
  got = model.loglikelihood_rolling([type('R', (), {'args': (d['text'],)}) for d in PPL])
  np.testing.assert_allclose(got, expected, atol=1e-3)
  words = sum(len(re.split(r'\s+', d['text'])) for d in PPL)  # the harness's count (a trailing space: a word)
  assert out['results']['tiny_ppl']['word_perplexity,none'] == pytest.approx(np.exp(-sum(expected) / words), rel=1e-5)

  # generation: greedy, one token at a time over the whole sequence, cut at the first stop string
  matches = []
  for doc in GEN:
    ids = tok.encode(f'Q: {doc["question"]}\nA:')
    new = []
    for _ in range(6):
      nxt = int(np.argmax(logprobs(served, ids + new)[-1]))
      new.append(nxt)
      if nxt == tok.eos_id:
        break
    text = tok.decode(new).split('\n')[0].split('.')[0]
    matches.append(text.strip() == doc['answer'])
    assert model.generate_until([type('R', (), {'args': (f'Q: {doc["question"]}\nA:', {
        'until': ['\n', '.'], 'max_gen_toks': 6})})])[0] == text
  assert out['results']['tiny_gen']['exact_match,none'] == pytest.approx(np.mean(matches))


def test_unknown_task_and_missing_stage_are_one_line_errors(run, tmp_path):
  workdir, tasks = run
  for argv, expected in [([f'--workdir={workdir}', '--tasks=tiny_nope', f'--include_path={tasks}'],
                          "--tasks has 'tiny_nope': not a task of lm-eval"),
                         ([f'--workdir={tmp_path}', '--tasks=tiny_mc', f'--include_path={tasks}'],
                          'no finished rlhf/sft/pretrain/import stage')]:
    with pytest.raises(SystemExit) as e:
      benchmark.main(argv)
    assert str(e.value.code).startswith('lm.benchmark: error: ') and expected in str(e.value.code)
