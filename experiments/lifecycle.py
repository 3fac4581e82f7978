"""The whole life of a tiny model on the lab's data, on a laptop CPU: tokenizer -> pretrain -> SFT (with
thinking and tools) -> the panel ranks the SFT model's own samples -> a reward model on those rankings
and the template candidates' -> PPO against it -> the report card of base, SFT and RLHF models. The
README's main command.

  python -m lm.launch --config=experiments/lifecycle.py --workdir=runs/lifecycle
  ...:full     longer stages (1,600 pretraining and 700 SFT steps: 22 min for those on a 2-core EPYC)
  ...:smoke    a minutes-long version for tests (tiny sizes)

Ends with ``<workdir>/eval/report.md`` (the skills table) and the run's report card
(``<workdir>/report.md``, ``report.html``, plots).

The lab is set so the tiny model can learn its skills (each knob, its value and why):
  * a small world (``WORLD``: 104 entities, 35% held out): few enough facts for a 4.7M-param model to
    pick up in a few hundred steps; the held-out entities make the "I don't know" sets. Holding out
    more (``n_people=100, n_towns=24, n_creatures=20, n_objects=30, held_out_fraction=0.6``: 70 known,
    104 held out, 31 of every kind in SFT against 11 and no object) raised "I don't know" 0.23 -> 0.64
    over three seeds, but the model copied operands from the prompt less often (worked sums restating
    both right 0.83 -> 0.37); in ``:full`` one seed of it lost the procedures (worked sums 0.53) and
    another learned them (0.90) with "I don't know" 0.79: which world is better is open (README).
  * ``data.fact_articles=FACT_ARTICLES``: every known fact is stated at least that many times in the
    pretraining text whatever the draw; the rest of the text is ``PRETRAIN_MIX``, where ``qa`` states
    non-eval facts as questions and answers (pretraining already shows facts being asked, in
    phrasings unlike the chat questions) and written-out sums, spellings and Veltic carry the
    procedures SFT asks for.
  * ``data.pretrain_chars=1.6M`` read about four times in 800 pretraining steps (1.6M tokens; the
    held-out loss falls with the train loss, 0.59 and 0.60 at the end) and 24,000 SFT examples (about
    1.8 passes in 600 steps): with 0.4M characters and 6,000-8,000 examples read many times over, the
    model memorised them (pretraining train loss 0.19 against a held-out 1.03) and copied operands and
    words wrongly ("249 plus 816" became "294 + 866"). 800 pretraining steps, not 400: world questions
    rise with pretraining tokens (0.47, 0.56 and 0.66 at 200, 400 and 800 steps in
    experiments/lab_scaling.py), and bf16 paid for them.
  * ``sft.steps=600`` on rows packed by best fit (98% tokens, ``pipeline.pack_conversations``): 2.4M
    tokens, each example read about 1.7 times. At 350 steps (0.9 passes, rows 84% tokens) the copying
    that worked sums and calculator calls need formed in one seed of three (worked sums 0.13 pooled);
    at 600 every seed copies the sum asked into its scratchpads and calls (worked sums 0.84, counting
    0.15 -> 0.49 pooled over three seeds, with the marks scratchpad and no strangers). It is the
    examples read, not the steps: 700 steps of 8 rows learn a fraction of it (README: twice the SFT
    steps).
  * ``counting='compare'`` (``data.world.counting``): the counting scratchpad sets every letter beside
    the letter counted ("g vs n no, ..., n vs n yes (1)"), in pretraining's word lists and SFT's answers,
    so each comparison is between two neighbouring tokens. With the marks it replaced ("g, a, r, d, e,
    n (1)") the model spelled the word right and then marked the wrong letters: every letter marked
    right in 103 of the 216 scratchpads that spelled the word right, against 163 of 183 compared; counting
    0.49 -> 0.70 over three seeds at 600 SFT steps (spelling between the comparisons is harder: the word
    spelled right 0.85 -> 0.70 of the scratchpads that restate it). Its opening stays quoted
    (``data.world.restate='quoted'``) after a bare question too: restating as asked changed nothing over
    five seeds (README): a wrong restatement names another word SFT counted ("queen" as "question"),
    whatever the quotes. Spelling the word as a plain list first (``counting='spelled'``): the list right
    in nearly every scratchpad, but the comparisons miscopy it at doubled letters (counting +0.05 [-0.02,
    0.11] over two seeds, README: not settled).
  * ``data.sft_strangers=SFT_STRANGERS``: a quarter of SFT's unknown_entity examples ask about a stranger
    (a new made-up name each) instead of the sft split's few held-out entities: "I don't know" 0.34 ->
    0.76 over three seeds, paired on the same pretrained models +0.42 [0.36, 0.48]; it costs world
    questions -0.08 [-0.14, -0.03] (0.15 of questions about known entities now answered "I don't know")
    and all sets gain +0.07 [0.06, 0.09] (n=2,460). A tenth keeps world questions (-0.01 [-0.07, 0.04])
    and reaches "I don't know" 0.63 (+0.29 [0.23, 0.35]): the quarter is for the farther target, 0.8.
  * ``things='coined'`` (``data.world.things``): each thing is named by a made-up word of its own ("the
    Brelic Lantern"), not by an adjective other things share ("the Ashen Lantern"). With shared names a
    held-out thing's name is made of words the known things' names use, and so is a stranger thing's: the
    model declined held-out things 0.53 of the time and known ones 0.44. Coined, over five seeds a side:
    held-out things 1.00, "I don't know" 0.75 -> 0.89, world questions kept (0.39 -> 0.42), worked sums
    0.65 -> 0.76; the calculator 0.63 -> 0.41, two seeds of five not copying the sum into the call.
  * ``calls='spaced'`` (``data.world.calls``): a calculator call writes the sum as the question does,
    "24 + 87", not "24+87", whose "+" is a token the question lacks: after it, seeds called the
    calculator with the first operand copied and the second not. Spaced, over five seeds paired on the
    same prompts: calls carrying the sum 0.62 -> 0.93, the calculator +0.17 [0.13, 0.21] (3-digit sums
    0.51 -> 0.85), the other headline sets within their intervals of zero.
  * ``sft.pretrain_share=0.05`` with ``sft.pretrain_mix=REHEARSAL``: a twentieth of SFT's rows are fresh
    articles and question-and-answer documents (README: SFT forgets the facts only pretraining stated).
    The pretrained model knows 0.75 of the eval's facts (``python -m lm.facts``) and SFT without
    rehearsal keeps 0.51 of them. Paired on the same pretrained models in three seeds (EPYC): world
    questions +0.15 [0.09, 0.21] (0.44 -> 0.59), facts known after SFT 0.53 -> 0.72, worked sums +0.09
    [0.03, 0.14], calculator and counting within 0.01 of zero, "I don't know" -0.03; over five seeds world
    questions 0.60, past 0.5 in each. A tenth lifted world questions as much (+0.19 over five seeds) and
    cost worked sums -0.16 in two seeds of five.
  * ``sft.optim.lr=2e-3`` (the peak; 15 warm-up steps, cosine to a tenth), not 1e-3: the procedures form
    late in SFT (the skill curves), and at 1e-3 seeds stopped short of copying the sum or the word. Over
    five seeds on the EPYC, each against the same seed at 1e-3 (same pretrained model and eval items),
    the difference's mean over seeds: all sets +0.045 [0.019, 0.071], world questions +0.07 [0.04, 0.10];
    pooled (n=500 a side): worked sums +0.09 [0.03, 0.14], the calculator +0.09 [0.03, 0.15], counting
    +0.07 [0.02, 0.12], "I don't know" -0.01 [-0.05, 0.03]. At 3e-3 (three seeds, paired with 2e-3 on
    the same prompts) all sets -0.03 [-0.05, -0.02], worked sums -0.18 [-0.25, -0.12]: a seed lost its
    digit steps.
    The knobs below were measured at 350 SFT steps.
  * not set: ``reading`` documents in the mix (counting 0.14 -> 0.35 over two seeds, the calculator lost
    in one; README: two knobs aimed at copying). Nor ``digit_sums`` documents,
    the digit steps worked sums are made of (right 0.42 -> 0.64 over three seeds, in two of them; worked
    sums +0.12, the calculator -0.11: only one of the three runs copies the sum asked into its scratchpad
    and calculator call), nor pretraining rows of 256 tokens (no gain in two seeds), nor ``copying``
    documents (no copying in two seeds, world questions -0.25), nor ``pretrain.induction_share=0.1``
    (counting +0.20 and the counting scratchpad's copy of the word +0.40 over three seeds, "I don't know"
    -0.24, sums copied in one seed fewer), nor ``data.world.by_place`` (worked sums that read the
    operands' digits by place first: worked sums -0.08 and the calculator -0.23 over three seeds; the
    default's steps read the right digits already), nor ``digit_sums`` at a tenth in place of Veltic (digit
    steps right 0.42 -> 0.85 in every seed, but no seed copied the sum: calculator -0.31); README: digit
    steps come from a table, longer pretraining rows, copying comes with the pretrained model, random
    strings repeated once, reading the digits by place first, digit sums in place of Veltic.
  * ``TASK_OPTIONS``: addition of 1 to 3 digits (2-digit sums are what a scratchpad is for, 3-digit
    ones the calculator) and counting letters in words of 3 to 8 letters.
  * ``SFT_MIX``: the headline skills weighted up; thinking and tool variants only, since a direct
    and a thinking prompt are the same question (the direct contrast is experiments/thinking_vs_direct.py
    and tokenization_counting.py, which train each way apart).
  * ``model.dtype='auto'``: bfloat16 matmul operands (float32 params, norms, softmax and accumulation) on
    a CPU with native bf16 matmuls, float32 on one without (AVX2 only, where bf16 is slower); on a
    2-core AMX Xeon the train step is 1.7x float32's with the same pretraining loss curve (at 400
    pretraining and 200 SFT steps the lifecycle took 661 s against float32's 907 s). ``:smoke`` keeps
    float32 (the same numbers on every CPU).
  * ``fact_probe`` (pretraining and SFT; on in ``:full``, off here for the time budget): at each eval, the
    share of world facts known (``lm.probes``; the report card's fact curves), which SFT undoes.
  * ``pretrain.copy_probe=64``: at each pretraining eval, teacher-forced copying on 64 worked sums and 64
    random strings repeated once (``lm.probes``; the report card's copy curves): whether pretraining
    teaches the copying that SFT's worked sums and calculator calls need.
  * ``eval.max_new_tokens=192`` and the SFT probe's 144: a worked 3-digit scratchpad (about 130 tokens)
    fits; eval sets of ``EVAL_EXAMPLES`` prompts, 100 for the headline sets, so intervals are about
    +-0.1 wide.
What these budgets reach (the README's results): the default (800 pretraining and 600 SFT steps, about
15 minutes of stages on a 2-core AVX512-BF16 EPYC, the launcher keeping freed memory), pooled over its five seeds on
the EPYC, learns the chat format (0.99), refusals (over-refusal 0.02 [0.01, 0.05]), "I don't know" (0.88
[0.85, 0.91], past 0.8 in each seed), facts (world questions 0.67 [0.63, 0.71], 0.43 before rehearsal),
the calculator (3-digit sums 0.86 [0.80, 0.91]), and, at the target's point but not its interval, the
worked 2-digit sums (0.80 [0.74, 0.85]) and counting with the word spelled out (0.79 [0.75, 0.82]).
``:full`` (1,600 and 700 steps; 22 minutes of stages to SFT's eval on the EPYC) is not ahead: pooled over
two seeds, world questions 0.66 [0.59, 0.72], "I don't know" 0.85 [0.80, 0.90], counting 0.84 [0.78, 0.88],
worked 2-digit sums 0.79 [0.68, 0.87] and the calculator at 3 digits 0.82 [0.70, 0.89]; one seed learns
every procedure (2- and 3-digit sums 1.00), the other copies the sum wrongly into a fifth of its
scratchpads and calls.
"""

from lm.configs import base, models

BREAKDOWNS = ('arithmetic/thinking:digits', 'arithmetic/tool:digits', 'char_count:length')
WORLD = dict(n_people=60, n_towns=14, n_creatures=12, n_objects=18, held_out_fraction=0.35, counting='compare',
             things='coined', calls='spaced')
FACT_ARTICLES = 2
PRETRAIN_MIX = (('article', 0.45), ('qa', 0.2), ('story', 0.05), ('arithmetic', 0.1), ('words', 0.1),
                ('translation', 0.1))
# SFT's pretraining rows: the corpus's two fact kinds, fresh, in its proportions
REHEARSAL = tuple((kind, w) for kind, w in PRETRAIN_MIX if kind in ('article', 'qa'))
TASK_OPTIONS = dict(arithmetic=dict(ops=('add',), digit_range=(1, 3)), char_count=dict(word_lengths=(3, 8)))
SFT_MIX = (
    ('world_qa', 'direct', 3.0), ('unknown_entity', 'direct', 1.5), ('unknown_entity', 'tool', 0.5),
    ('arithmetic', 'thinking', 2.0), ('arithmetic', 'tool', 1.5), ('char_count', 'thinking', 2.0),
    ('safety', 'direct', 1.0), ('manners', 'direct', 1.0), ('length_control', 'direct', 0.5),
)
SFT_STRANGERS = 0.25
EVAL_EXAMPLES = 60
EVAL_SIZES = (('world_qa', 100), ('unknown_entity', 100), ('arithmetic', 100), ('char_count', 100),
              ('safety', 100))


def get_config(arg: str = ''):
  if arg not in ('', 'full', 'smoke'):
    raise ValueError(f'unknown experiments/lifecycle.py argument {arg!r}; valid: full, smoke')
  c = base.get_config()
  c.stages = ('data', 'tokenizer', 'pretrain', 'sft', 'preferences', 'reward', 'rlhf', 'eval')
  c.data.world.update(WORLD)
  c.data.update(pretrain_chars=1_600_000, pretrain_mix=PRETRAIN_MIX, fact_articles=FACT_ARTICLES,
                sft_mix=SFT_MIX, sft_examples=24000, sft_strangers=SFT_STRANGERS,
                eval_sets=tuple(sorted({(f, v) for f, v, _ in SFT_MIX})), eval_examples=EVAL_EXAMPLES,
                eval_sizes=EVAL_SIZES)
  for family, options in TASK_OPTIONS.items():
    c.data.task_options[family].update(options)
  rl_mix = tuple(row for row in SFT_MIX if row[1] == 'direct')
  c.data.preferences.mix = rl_mix
  # the reward model learns the panel's rankings of the SFT model's own samples beside the candidates'
  c.rankings.update(n_prompts=200, k=4, max_new_tokens=96)
  c.reward.update(data='mix', steps=100)
  # KL coefficient 0.5, not 0.05: against this reward model every step size lowers gold, the smallest
  # least (experiments/rlhf_step_size.py: -0.02 against -0.105 at 0.05, paired over the eval prompts)
  c.rlhf.update(prompt_mix=rl_mix, iterations=30, prompts_per_iteration=16, eval_prompts=48, eval_every=10,
                max_new_tokens=96, epochs=2, minibatch_size=16, kl_coef=0.5)
  c.pretrain.update(steps=800, eval_every=200, checkpoint_every=200, copy_probe=64)
  c.sft.update(steps=600, eval_every=100, checkpoint_every=100, probe_examples=8, probe_max_new_tokens=144,
               pretrain_share=0.05, pretrain_mix=REHEARSAL)
  c.sft.optim.lr = 2e-3
  c.eval.update(breakdowns=BREAKDOWNS, max_examples=0, max_new_tokens=192)
  c.model.dtype = 'auto'  # bf16 matmuls where the CPU has them natively (AMX, AVX512-BF16), float32 elsewhere
  if arg == 'smoke':
    c.data.pretrain_chars, c.data.fact_articles, c.data.sft_examples, c.data.eval_examples = 150_000, 1, 200, 2
    c.data.eval_sizes = ()
    c.data.preferences.n_prompts = 48
    c.rankings.update(n_prompts=8, max_new_tokens=16)
    c.tokenizer.vocab_size = 512
    c.model = models.get('test', max_seq_len=128)
    for stage in (c.pretrain, c.sft, c.reward):
      stage.steps, stage.batch_size = 12, 8
      stage.log_every = stage.eval_every = stage.checkpoint_every = 4
      stage.eval_batches = 1
      stage.optim.warmup_steps = 2
    c.pretrain.copy_probe = 4
    c.pretrain.fact_probe = c.sft.fact_probe = True
    c.sft.probe_examples, c.sft.probe_max_new_tokens = 2, 16
    c.pretrain.seq_len, c.sft.seq_len, c.reward.seq_len = 64, 128, 128
    c.reward.normalize_prompts, c.reward.normalize_max_new_tokens = 8, 16
    c.rlhf.update(iterations=2, prompts_per_iteration=8, n_prompts=80, eval_prompts=8, eval_every=2,
                  max_prompt_len=48, max_new_tokens=16, epochs=1, minibatch_size=8, checkpoint_every=1,
                  best_of_n=(1, 2, 4))
    c.rlhf.preference.update(seq_len=128, batch_size=8, steps_per_iteration=2)
    c.eval.max_new_tokens, c.eval.batch_size, c.eval.max_examples = 24, 32, 2
  elif arg == 'full':
    c.pretrain.update(steps=1600, eval_every=400, checkpoint_every=400, fact_probe=True)
    c.sft.update(steps=700, eval_every=100, checkpoint_every=100, fact_probe=True)
    c.data.update(pretrain_chars=3_000_000, sft_examples=40000)
    c.rankings.n_prompts = 400
    c.reward.steps = 200
    c.rlhf.update(iterations=100, rounds=2)
  c.model.vocab_size = c.tokenizer.vocab_size
  return c
