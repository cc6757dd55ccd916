"""``python -m bench.suites``."""

from bench.suites.runner import main

raise SystemExit(main())
