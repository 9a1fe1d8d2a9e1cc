"""`python -m cromwell_lsp` runs the same command line as `cromwell`; with no arguments, or
with only the server's transport options (`--stdio`, `--tcp HOST:PORT`, as editors pass
them), it starts the language server."""
import sys

from .cli import main

argv = sys.argv[1:]
if not argv or argv[0] in ("--stdio", "--tcp") or argv[0].startswith("--tcp="):
    argv = ["serve", *argv]
raise SystemExit(main(argv))
