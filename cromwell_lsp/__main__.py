"""`python -m cromwell_lsp` runs the same command line as `cromwell`."""
from .cli import main

raise SystemExit(main())
