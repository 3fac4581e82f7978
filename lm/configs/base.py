"""The full config schema with defaults. Experiments start from ``get_config()`` and change fields;
the result is locked, so a mistyped key is an error rather than a silently ignored new field."""

import ml_collections

from lm.configs import meshes, models, optim


def train_section(steps: int, batch_size: int, seq_len: int, lr: float, warmup_steps: int = 100,
                  **overrides) -> ml_collections.ConfigDict:
  """What the train loop reads for one stage."""
  cfg = dict(
      steps=steps, batch_size=batch_size, seq_len=seq_len, microbatches=1, z_loss_weight=0.0,
      log_every=10, eval_every=100, eval_batches=4, checkpoint_every=100, keep_checkpoints=3,
      optim=optim.adamw(lr, warmup_steps))
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


# (family, variant, weight): what SFT teaches, and in what proportion
SFT_MIX = (
    ('world_qa', 'direct', 3.0), ('unknown_entity', 'direct', 1.0), ('unknown_entity', 'tool', 1.0),
    ('arithmetic', 'direct', 1.0), ('arithmetic', 'thinking', 1.0), ('arithmetic', 'tool', 1.0),
    ('word_problem', 'thinking', 1.0), ('word_problem', 'tool', 0.5), ('char_count', 'thinking', 1.0),
    ('char_count', 'tool', 0.5),
    ('spelling', 'direct', 0.5), ('translation', 'direct', 1.0), ('length_control', 'direct', 1.0),
    ('manners', 'direct', 1.0), ('safety', 'direct', 1.0), ('creative', 'direct', 0.5),
    ('joke', 'direct', 0.5), ('slogan', 'direct', 0.5),
)
EVAL_SETS = tuple(sorted({(f, v) for f, v, _ in SFT_MIX}))


# the simulated rater panel (lm.lab.raters.Panel): biases 0 and no noise would reproduce the gold ranking
# (outside the subjective families, where each rater has a taste of their own). experts: None (unset,
# everyone judges by gold), a fraction of raters expert in every domain, or per rater a domain, 'all',
# '' or a list of domains (math, world, veltic, safety, subjective); outside their expertise a rater
# judges correctness by lay_surface * surface cues (length, confidence, politeness) + lay_noise
PANEL = dict(n_raters=5, length_bias=0.0, confidence_bias=0.0, position_bias=0.0, noise=0.1, seed=0,
             experts=None, lay_surface=0.5, lay_noise=0.3)


def data_section(**overrides) -> ml_collections.ConfigDict:
  """The lab's world and how much of each dataset the data stage generates."""
  cfg = dict(
      seed=0,
      # by_place: worked sums read both operands' digits by place before the digit steps (lm.lab.world.scratchpad);
      # counting: marks, compare or spelled, how a counting scratchpad spells the word (lm.lab.world.spelled_count);
      # things: adjectives ("the Ashen Lantern", words shared between things) or coined ("the Brelic Lantern");
      # calls: compact ("24+87") or spaced ("24 + 87", as the question writes it), a calculator call's sum;
      # restate: quoted ('Counting "a" in "tall":') or asked (as the question writes them), a counting scratchpad's
      # opening
      world=dict(n_people=200, n_towns=40, n_creatures=30, n_objects=60, held_out_fraction=0.1, by_place=False,
                 counting='marks', things='adjectives', calls='compact', restate='quoted'),
      pretrain_chars=2_000_000, validation_fraction=0.02,
      # (kind, weight) of the world's documents (lm.lab.world KINDS: article, story, arithmetic, words,
      # translation, humour, qa); () = World.MIX
      pretrain_mix=(),
      # articles on every known entity ahead of the mix: each known fact is stated at least this often
      fact_articles=0,
      pretrain_tfds='',  # e.g. 'tiny_shakespeare' or 'c4:train:text' instead of the world's text ([tf] extra)
      pretrain_stream=False,  # pretrain streams its corpus (lm.data.streaming); a pretrain_tfds source always does
      sft_examples=4000, sft_mix=SFT_MIX,
      sft_strangers=0.0,  # the fraction of SFT's unknown_entity examples about made-up entities (datasets.sft_examples)
      sft_writers=1.0,  # the fraction of SFT answers experts wrote (the references); lay writers wrote the rest
      eval_examples=50, eval_sets=EVAL_SETS,   # per eval set
      eval_sizes=(('world_qa', 50),),          # (family, n): another size for that family's sets
      # options of a family's examples, in every split ((): the family's own): arithmetic ops and
      # digit_range (inclusive; default 1-5, products 1-3); char_count word_lengths (inclusive);
      # translation adjectives (counts per noun phrase drawn from; default 0,1,1,1,2) and vocabulary
      # (nouns, adjectives used; default all 98, 40); word_problem steps (drawn from; default 2)
      task_options=dict(arithmetic=dict(ops=(), digit_range=()), char_count=dict(word_lengths=()),
                        translation=dict(adjectives=(), vocabulary=()), word_problem=dict(steps=())),
      preferences=dict(n_prompts=500, k=4, mix=SFT_MIX, validation_fraction=0.1,  # held out by item per family, source
                       panel=PANEL),
  )
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


RLHF_MIX = tuple((f, v, w) for f, v, w in SFT_MIX if v != 'tool')  # RL prompts: no tools offered


def rlhf_section(**overrides) -> ml_collections.ConfigDict:
  """The rlhf stage (lm/stages/rlhf.py): the algorithm by name and its knobs."""
  cfg = dict(
      algorithm='ppo',               # ppo, grpo, rloo, dapo, dr_grpo, gspo, reinforce_pp (online: lm.rl.online);
                                     # dpo, ipo (offline, from the rankings); best_of_n
      iterations=50, prompts_per_iteration=16,
      group_size=1,                  # responses per prompt in a rollout (grpo, rloo, dapo, dr_grpo, gspo: >= 2)
      n_prompts=2000, prompt_mix=RLHF_MIX, eval_prompts=64, eval_every=10,
      max_prompt_len=64, max_new_tokens=64, temperature=1.0,
      epochs=4, minibatch_size=16, microbatches=1,
      optim=optim.adamw(1e-4, warmup_steps=0, weight_decay=0.0, min_lr_ratio=1.0),
      kl_coef=0.05,                  # initial KL coefficient (beta)
      kl_target=0.0, kl_horizon=10000.0,  # kl_target > 0: Ziegler's adaptive controller
      penalize_unfinished=True, unfinished_penalty=-1.0,  # replaces the score of a response that never ends
      ppo=dict(clip_ratio=0.2, value_clip=0.2, vf_coef=0.1, entropy_coef=0.0, gamma=1.0, lam=0.95,
               whiten_advantages=True),
      grpo=dict(scale_by_std=True),  # also dapo's
      # how the policy-gradient losses turn per-token terms into the loss (lm.rl.ppo.loss_weights):
      # token_mean (over every response token of the minibatch), seq_mean_token_sum (mean over responses
      # of the sum over tokens), seq_mean_token_mean (mean over responses of the token mean),
      # seq_mean_token_sum_norm (sum over tokens / the constant max_new_tokens, mean over responses);
      # '': the algorithm's own: token_mean for ppo, grpo, rloo, dapo, reinforce_pp (as before this
      # key), seq_mean_token_sum_norm for dr_grpo, seq_mean_token_mean for gspo
      loss_agg='',
      dapo=dict(clip_low=0.2, clip_high=0.28),    # ratio clipped to [1 - low, 1 + high] (clip-higher)
      gspo=dict(clip_low=3e-4, clip_high=4e-4),   # the sequence ratio's clip range (the GSPO paper's)
      preference=dict(beta=0.1, pairs='all', ranking='panel', seq_len=256, batch_size=16, steps_per_iteration=10),
      best_of_n=(1, 2, 4, 8, 16),
      checkpoint_every=10, keep_checkpoints=3)
  # what the run trains on: the reward model ('model'), the lab's gold scorers ('gold': RLVR), or
  # reward_weights (model, gold) of both ('mix'); gold is logged whatever it trains on
  cfg.update(reward='model', reward_weights=(1.0, 1.0))
  # tools offered in the RL prompts that offer them (tool variants of prompt_mix): the calls run inside
  # the rollouts (lm.inference.agent); () removes the offer
  cfg.update(tools=(), max_tool_calls=2, result_tokens=96)
  # iterated RLHF: rounds > 1 splits the iterations into rounds; before each round after the first the
  # current policy's samples are ranked (the rankings section) and the reward model trains on them
  cfg.update(rounds=1)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


def synthetic_section(**overrides) -> ml_collections.ConfigDict:
  """The synthetic stage (lm/stages/synthetic.py): rejection sampling from a trained model; and the
  continued SFT passes after it (sft_original, sft_synthetic: the sft section with sft_steps, sft_lr)."""
  cfg = dict(
      model='latest',               # whose samples: sft, rlhf, or latest (rlhf when it ran, else sft)
      n_prompts=500, mix=SFT_MIX, seed=100,  # new prompts (data.seed + seed), never an eval or SFT prompt
      samples_per_prompt=4, temperature=1.0, max_new_tokens=128, batch_size=64,
      # tool prompts run through lm.agent with these; () removes the offer, runs none
      tools=('calculator', 'python', 'knowledge_base'), max_tool_calls=3, result_tokens=128,
      judge='gold',                 # gold: the lab's score >= gold_threshold; reward: the reward model's
      gold_threshold=1.0, reward_threshold=0.5,  # normalised reward (std units over the reference) >= this
      keep_per_prompt=1,            # distinct accepted responses kept per prompt
      sft_steps=100, sft_lr=3e-4)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


# What a number may be, checked before a run starts (lm.config.validate; every experiment's config
# passes): dotted key pattern ('*' matches any part) -> '>= x', '> x' or 'a..b' (both ends included).
# The first pattern that matches a key applies; for a tuple, to each of its numbers.
RANGES = {
    # counts that must be positive (0 would train nothing, divide by zero or never log)
    '*.steps': '>= 1', '*.batch_size': '>= 1', '*.seq_len': '>= 1', '*.microbatches': '>= 1',
    '*.log_every': '>= 1', '*.checkpoint_every': '>= 1', '*.keep_checkpoints': '>= 1',
    'rlhf.eval_every': '>= 0',  # 0: no eval
    '*.eval_every': '>= 1', '*.eval_batches': '>= 0',
    'rlhf.iterations': '>= 1', 'rlhf.prompts_per_iteration': '>= 1', 'rlhf.group_size': '>= 1',
    'rlhf.epochs': '>= 1', 'rlhf.minibatch_size': '>= 1', 'rlhf.rounds': '>= 1', 'rlhf.n_prompts': '>= 1',
    'rlhf.eval_prompts': '>= 0', 'rlhf.best_of_n': '>= 1', 'rlhf.preference.steps_per_iteration': '>= 1',
    '*max_new_tokens': '>= 1', '*.max_prompt_len': '>= 1', '*.result_tokens': '>= 1', '*.max_tool_calls': '>= 0',
    '*.n_prompts': '>= 0', '*.k': '>= 2', '*.samples_per_prompt': '>= 1', '*.keep_per_prompt': '>= 1',
    '*.normalize_prompts': '>= 1', '*.sft_steps': '>= 1', '*.max_examples': '>= 0', '*.n_raters': '>= 1',
    'data.pretrain_chars': '>= 1', 'data.fact_articles': '>= 0', 'data.sft_examples': '>= 1',
    'data.eval_examples': '>= 1', 'mesh.cpu_devices': '>= 0',
    'data.world.n_*': '>= 1', 'tokenizer.vocab_size': '>= 1', 'sft.lora.rank': '>= 1',
    'model.vocab_size': '>= 1', 'model.d_model': '>= 1', 'model.n_layers': '>= 1', 'model.n_heads': '>= 1',
    'model.n_kv_heads': '>= 1', 'model.d_ff': '>= 1', 'model.max_seq_len': '>= 1', 'model.head_dim': '>= 0',
    'model.sliding_window': '>= 0', 'model.norm_eps': '> 0',
    'distributed.num_processes': '>= 1', 'distributed.process_id': '>= 0',
    # rates, coefficients and temperatures (0 allowed: no decay, no clipping, greedy sampling, ...)
    '*.optim.lr': '>= 0', '*.optim.warmup_steps': '>= 0', '*.optim.min_lr_ratio': '0..1', '*.optim.b1': '0..1',
    '*.optim.b2': '0..1', '*.optim.eps': '>= 0', '*.optim.weight_decay': '>= 0', '*.optim.clip_norm': '>= 0',
    '*.sft_lr': '>= 0', '*.z_loss_weight': '>= 0', '*temperature': '>= 0', '*.margin': '>= 0', '*.noise': '>= 0',
    'rlhf.kl_coef': '>= 0', 'rlhf.kl_target': '>= 0', 'rlhf.kl_horizon': '> 0', 'rlhf.reward_weights': '>= 0',
    'rlhf.ppo.gamma': '0..1', 'rlhf.ppo.lam': '0..1', 'rlhf.ppo.*': '>= 0', 'rlhf.preference.beta': '> 0',
    'rlhf.dapo.*': '0..1', 'rlhf.gspo.*': '0..1', 'sft.lora.alpha': '>= 0',
    '*_fraction': '0..1',  # validation_fraction, held_out_fraction
    'pretrain.induction_share': '0..1', 'sft.pretrain_share': '0..1',
    'data.sft_writers': '0..1', 'data.sft_strangers': '0..1', '*.lay_surface': '0..1', '*.lay_noise': '>= 0',
}


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.stages = ('data', 'tokenizer', 'pretrain')
  c.tracker = 'none'  # also trackio or wandb: metrics, the config and sample tables beside metrics.jsonl (lm.metrics)
  c.mesh = meshes.get('data')
  # Set these for several processes outside TPU VMs (which jax detects itself).
  c.distributed = ml_collections.ConfigDict({'coordinator_address': '', 'num_processes': 1, 'process_id': 0})
  c.model = models.get('tiny')
  c.data = data_section()
  c.tokenizer = ml_collections.ConfigDict({'kind': 'bpe', 'vocab_size': 1024, 'split_digits': True})
  c.pretrain = train_section(steps=150, batch_size=16, seq_len=128, lr=3e-3, warmup_steps=15,
                             eval_every=50, checkpoint_every=50,
                             # at each eval, teacher-forced copying on this many worked sums and random
                             # strings (lm.probes; 0: off), logged as copy[...] and digit_step
                             copy_probe=0,
                             # at each eval, the share of world facts known (lm.probes.make_fact_probe: the
                             # eval's world questions and as many others), logged as facts_known[eval|other]
                             fact_probe=False,
                             # this share of the train tokens are random strings repeated once
                             # (lm.data.induction: copying, which the lab's text teaches too rarely)
                             induction_share=0.0)
  c.sft = train_section(steps=150, batch_size=16, seq_len=256, lr=1e-3, warmup_steps=15,
                        eval_every=50, checkpoint_every=50, mode='full', pack=True,
                        # a learning curve per skill: at each eval, greedy answers to this many eval
                        # prompts of every set (0: off), logged as skill[<family>/<variant>]
                        probe_examples=0, probe_max_new_tokens=64,
                        fact_probe=False,  # and the world facts known (as pretrain.fact_probe)
                        thinking=True,  # False: scratchpads stripped (thinking examples become direct ones)
                        tools=True,     # False: conversations that offer or use tools are left out
                        # this share of the train rows are pretraining text, loss on every token (rehearsal):
                        # the data stage's corpus, or fresh lab documents of pretrain_mix's (kind, weight)s
                        pretrain_share=0.0, pretrain_mix=(),
                        lora=ml_collections.ConfigDict({'rank': 8, 'alpha': 16.0,
                                                        'targets': ('q', 'k', 'v', 'o', 'gate', 'up', 'down')}))
  c.interop = ml_collections.ConfigDict({'hf_dir': ''})  # the import stage's Hugging Face checkpoint
  # reward model on the panel's rankings (batch_size counts prompts, each with data.preferences.k responses)
  c.reward = train_section(steps=100, batch_size=8, seq_len=256, lr=3e-4, warmup_steps=10, eval_every=50,
                           checkpoint_every=50, eval_batches=8,
                           data='candidates',     # what it trains on: candidates, policy (samples ranked), mix
                           loss='plackett_luce',  # or 'bradley_terry'
                           margin=0.0,
                           normalize_prompts=64, normalize_temperature=1.0, normalize_max_new_tokens=64)
  c.eval = ml_collections.ConfigDict({
      'models': ('pretrain', 'sft', 'rlhf'),  # stages whose models are evaluated, where they ran
      'max_new_tokens': 128, 'batch_size': 64,
      # the pretrained model never learned to end a chat turn: it writes at most this many tokens
      # (a batch runs as long as its longest answer; in the lifecycle, past 64 its text changes 1 score of 820)
      'base_max_new_tokens': 64,
      'max_examples': 50,                     # per eval set (0: all)
      'skip_variants': (),
      # prompts that offer tools run through lm.agent with these; () removes the offer, runs none
      'tools': ('calculator', 'python', 'knowledge_base'), 'max_tool_calls': 3, 'result_tokens': 128,
      'breakdowns': ()})                      # 'family:meta_key' (or 'family'): extra accuracy metrics
  # the panel of the preferences stage, which re-ranks the data stage's candidates (vary raters here)
  # human: a run directory (or rankings.jsonl) whose human/rankings.jsonl the browser's ranking page
  # wrote; the preferences stage adds them 'beside' the panel's rankings or uses them 'instead'
  c.raters = ml_collections.ConfigDict({'panel': dict(PANEL), 'human': '', 'human_mode': 'beside'})
  # the preferences stage's rankings of a model's own samples (lm.rl.rankings), ranked by raters.panel
  c.rankings = ml_collections.ConfigDict({'policy': 'sft', 'n_prompts': 0, 'k': 4, 'temperature': 1.0,
                                          'max_new_tokens': 64, 'batch_size': 64})
  c.rlhf = rlhf_section()
  c.synthetic = synthetic_section()
  # name -> nested overrides; each variant runs under <workdir>/<name>/ and ends in one table
  c.variants = ml_collections.ConfigDict()
  # finished stages of another run that this one takes as inputs (e.g. data .. sft of a lifecycle run)
  c.reuse = ml_collections.ConfigDict({'workdir': '', 'stages': ()})
  c.shared_stages = ()  # with variants: stages run once in <workdir>/shared, their outputs given to each variant
  # with variants: the comparison table's 'stage.key' columns (() = all), an optional (x, y) scatter
  # and optional curves (x, (y, ...)): lm.report.comparison
  c.comparison = ml_collections.ConfigDict({'columns': (), 'plot': (), 'curves': ()})
  c.lock()
  return c
