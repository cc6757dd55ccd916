"""``python -m fedpriv.cli``: the same as the ``fedpriv`` console script."""

from fedpriv.cli import main

main()
