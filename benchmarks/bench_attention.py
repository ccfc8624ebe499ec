"""Fused attention benchmark: see mmkeras/benchmarks/attention.py."""

from mmkeras.benchmarks.attention import main

if __name__ == "__main__":
    main()
