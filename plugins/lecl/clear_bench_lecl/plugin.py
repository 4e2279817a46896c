from clear_bench import hookimpl  # noqa: F401
