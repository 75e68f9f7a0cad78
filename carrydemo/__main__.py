"""Run the command line: ``python -m carrydemo --help``."""

from carrydemo.cli import main

raise SystemExit(main())
