"""``python -m lm.launch``: see ``lm.cli.launch``."""

from lm.cli.launch import main

if __name__ == '__main__':
  main()
