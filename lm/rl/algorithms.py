"""The RL algorithms by the name ``rlhf.algorithm`` gives (``lm.rl.learner`` says how to add one).

best_of_n, a measurement without training, is not here: the rlhf stage runs ``lm.rl.best_of_n``.
"""

from lm.rl import dapo, learner, offline, online

ALGORITHMS: dict[str, learner.Algorithm] = {
    'ppo': online.Online(estimator='gae'),
    'grpo': online.Online(estimator='grpo', min_group=2),
    'rloo': online.Online(estimator='rloo', min_group=2),
    'dapo': dapo.Dapo(),
    'dr_grpo': online.Online(estimator='dr_grpo', loss='dr_grpo', min_group=2),
    'gspo': online.Online(estimator='grpo', loss='gspo', min_group=2),
    'reinforce_pp': online.Online(estimator='reinforce_pp'),
    'dpo': offline.Offline(loss='dpo'),
    'ipo': offline.Offline(loss='ipo'),
}
