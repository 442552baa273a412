"""watcher's benchmark suite (DESIGN §10): ``python -m bench [--quick] [--only NAME ...]``.

Each ``bench_<name>`` module exposes ``run(workdir: Path, quick: bool) -> list[dict]``;
every row carries ``measure``, ``ours``, ``reference``, ``ratio``, ``target`` and
``verdict``. References are measured in the same run (these machines are shared and
noisy), and rows report medians, percentiles and ratios, never a single timing.
"""
