"""One module per ``clear-bench`` sub-command; each offers ``add_parser(subparsers)`` and ``run(args)``."""

early_plugin_paths: list[str] = []
"""``--plugin`` paths parsed before the full command line, for commands whose flags come from plugins."""
