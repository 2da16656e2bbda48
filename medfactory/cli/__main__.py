"""``python -m medfactory.cli``: the same command as the ``medfactory`` script."""

from medfactory.cli import main

main()
