"""``python -m lm.copying``: see ``lm.cli.copying``."""

from lm.cli.copying import main

if __name__ == '__main__':
  main()
