"""``python -m curvprune``: the same as the ``curvprune`` command."""

from curvprune.cli import main

raise SystemExit(main())
