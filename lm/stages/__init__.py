"""Stages: ``stage(config, workdir, inputs) -> outputs``; ``inputs`` maps earlier stage names to
their outputs (JSON-able dicts of paths and metrics). The launcher runs them by name
(``lm.cli.launch.STAGES``)."""
