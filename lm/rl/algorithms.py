"""The RL algorithms by the name ``rlhf.algorithm`` gives (``lm.rl.learner`` says how to add one).

best_of_n, a measurement without training, is not here: the rlhf stage runs ``lm.rl.best_of_n``.
"""

from lm.rl import learner, offline, online

ALGORITHMS: dict[str, learner.Algorithm] = {
    'ppo': online.Online(estimator='gae'),
    'grpo': online.Online(estimator='grpo', min_group=2),
    'rloo': online.Online(estimator='rloo', min_group=2),
    'dpo': offline.Offline(loss='dpo'),
    'ipo': offline.Offline(loss='ipo'),
}

