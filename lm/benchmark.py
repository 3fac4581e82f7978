"""``python -m lm.benchmark``: see ``lm.cli.benchmark``."""

from lm.cli.benchmark import main

if __name__ == '__main__':
  main()
