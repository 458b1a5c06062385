"""python -m dsatgo_np.train: the training command (cli.py)."""
import sys

from . import main

sys.exit(main())
