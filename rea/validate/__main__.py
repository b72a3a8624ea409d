"""``python -m rea.validate``: run :func:`rea.validate.main` (the ``make validate`` table)."""

import sys

from rea.validate import main

sys.exit(main())
