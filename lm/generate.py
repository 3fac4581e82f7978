"""``python -m lm.generate``: see ``lm.cli.generate``."""

from lm.cli.generate import main

if __name__ == '__main__':
  main()
