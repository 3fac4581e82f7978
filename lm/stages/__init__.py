"""Stages: ``stage(config, workdir, inputs) -> outputs``; ``inputs`` maps earlier stage names to
their outputs (JSON-able dicts of paths and metrics). The launcher runs them by name."""

from lm.stages import data, pretrain

STAGES = {
    'data': data.run,
    'pretrain': pretrain.run,
}
