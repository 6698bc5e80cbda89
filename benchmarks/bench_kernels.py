"""Thin wrapper: the benchmark lives in vnpu/bench/kernels.py (also run by `vnpu bench`)."""
from vnpu.bench.kernels import main

if __name__ == "__main__":
    main()
