"""One module per ``clear-bench`` sub-command; each offers ``add_parser(subparsers)`` and ``run(args)``."""
