"""The core's built-in encoders (beside :mod:`clear_bench.aggregators`, the built-in heads); registered
through :mod:`clear_bench.builtin` like any plugin's."""
