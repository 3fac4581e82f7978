"""``python -m lm.world``: see ``lm.cli.world``."""

from lm.cli.world import main

if __name__ == '__main__':
  main()
