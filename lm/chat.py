"""``python -m lm.chat``: see ``lm.cli.chat``."""

from lm.cli.chat import main

if __name__ == '__main__':
  main()
