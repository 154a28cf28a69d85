"""``python -m streams.cli``: the ``vitrina`` command."""
import sys

from streams.cli import main

sys.exit(main())
