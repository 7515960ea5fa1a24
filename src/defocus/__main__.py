"""``python -m defocus`` = the ``defocus`` command (what ``torchrun -m defocus train ...`` runs)."""

import sys

from defocus.cli import main

sys.exit(main())
