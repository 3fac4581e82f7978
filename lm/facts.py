"""``python -m lm.facts``: see ``lm.cli.facts``."""

from lm.cli.facts import main

if __name__ == '__main__':
  main()
