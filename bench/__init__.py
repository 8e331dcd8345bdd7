"""Foundation benchmarks.

Each ``bench_*.py`` module exposes ``async def run(quick) -> list[Row]``.
"""
