"""``python -m lm.serve --workdir=<run>``: a local web app over a run's trained models (``lm.cli.serve``).

  runs.py      what a workdir holds (runs, stages, traces, rollouts, metrics, report), read only
  engine.py    the thread that runs the models: queued jobs, batched by kind, decoded token by token
  turns.py     a turn as the pages show it (thinking, tool calls and results apart from the answer)
  ranking.py   ranking tasks, the records people's rankings become, agreement with gold and the panel
  app.py       the FastAPI app: pages (``static/``: plain HTML, JS and CSS) and the JSON API
"""
