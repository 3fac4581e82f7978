"""``python -m lm.claims``: see ``lm.cli.claims``."""

from lm.cli.claims import main

if __name__ == '__main__':
  main()
