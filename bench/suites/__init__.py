"""fedpriv benchmark suites (see runner.py)."""
