"""The RLHF metric names, once: what the learner's rows hold, what the rlhf stage returns, what the
stage's report and the run's report card tabulate and plot.

Every row (step = iteration) has the rollout measures (``lm.rl.rollouts.metrics``: means over the
iteration's responses, plus ``acc[<family>]`` per task family), ``eval_*`` of them every
``rlhf.eval_every`` iterations (the fixed eval prompts), the update's loss terms, the KL coefficient
and the seconds spent.
"""

MEASURES = ('proxy_reward', 'gold_reward', 'kl', 'kl_k3', 'response_length', 'finished', 'harmful_refusal_rate',
            'over_refusal_rate')
EVAL = ('eval_proxy_reward', 'eval_gold_reward', 'eval_kl')
SUMMARY = MEASURES + EVAL + ('kl_coef',)          # the report card's table
LOSS_TERMS = ('loss', 'policy_loss', 'value_loss', 'entropy', 'clip_fraction', 'accuracy', 'margin')
SECONDS = ('sample_s', 'score_s', 'update_s')
TABLE = SUMMARY + LOSS_TERMS + SECONDS            # the stage's report: first and last iteration
OUTPUTS = ('proxy_reward', 'gold_reward', 'kl', 'response_length') + EVAL  # the stage's final metrics
ACCURACY = 'acc['                                 # prefix of the per-family gold accuracies

PANELS = (  # title, [(metric, label)]: the plots against the iteration
    ('reward', (('proxy_reward', 'proxy (reward model)'), ('gold_reward', 'gold (lab scorers)'),
                ('eval_proxy_reward', 'proxy, eval prompts'), ('eval_gold_reward', 'gold, eval prompts'))),
    ('KL to the reference (nats per response)', (('kl', 'k1'), ('kl_k3', 'k3'), ('eval_kl', 'k1, eval prompts'))),
    ('response length (tokens)', (('response_length', 'rollouts'), ('eval_response_length', 'eval prompts'))),
    ('refusal rates', (('harmful_refusal_rate', 'refuses harmful'), ('over_refusal_rate', 'refuses benign'),
                       ('finished', 'ends its turn'))),
)
