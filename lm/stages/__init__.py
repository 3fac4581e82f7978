"""Stages: ``stage(config, workdir, inputs) -> outputs``; ``inputs`` maps earlier stage names to
their outputs (JSON-able dicts of paths and metrics). The launcher runs them by name."""

from lm.stages import (
    data,
    eval,
    hf_import,
    overoptimization,
    preferences,
    pretrain,
    reward,
    rlhf,
    sft,
    synthetic,
    tokenizer,
)

STAGES = {
    'data': data.run,
    'tokenizer': tokenizer.run,
    'pretrain': pretrain.run,
    'import': hf_import.run,
    'sft': sft.run,
    'preferences': preferences.run,
    'reward': reward.run,
    'rlhf': rlhf.run,
    'overoptimization': overoptimization.run,
    'synthetic': synthetic.run,
    'sft_original': sft.run_original,
    'sft_synthetic': sft.run_synthetic,
    'eval': eval.run,
}
