"""``python -m lm.report``: see ``lm.cli.report``."""

from lm.cli.report import main

main()
