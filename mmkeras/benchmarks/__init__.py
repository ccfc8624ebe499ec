"""Kernel and model benchmarks, shipped with the package so that
`mmkeras bench` works from any install; `benchmarks/*.py` run them from a
source checkout."""
