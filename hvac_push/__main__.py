"""C{python -m hvac_push}: the C{hvac-push} command (L{hvac_push.ops.cli})."""

from hvac_push.ops.cli import main

raise SystemExit(main())
