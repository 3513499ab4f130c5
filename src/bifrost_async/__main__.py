"""``python -m bifrost_async``: the same as the ``bifrost-async`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
