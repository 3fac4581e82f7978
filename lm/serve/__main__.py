"""``python -m lm.serve``: see ``lm.cli.serve``."""

from lm.cli.serve import main

if __name__ == '__main__':
  main()
