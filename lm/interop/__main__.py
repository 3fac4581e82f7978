"""``python -m lm.interop``: see ``lm.cli.interop``."""

from lm.cli.interop import main

main()
