"""Fusion and contrastive kernel benchmark: see mmkeras/benchmarks/fusion.py."""

from mmkeras.benchmarks.fusion import main

if __name__ == "__main__":
    raise SystemExit(main())
