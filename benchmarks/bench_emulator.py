"""Thin wrapper: the benchmark lives in vnpu/bench/emulator.py (also run by `vnpu bench`)."""
from vnpu.bench.emulator import main

if __name__ == "__main__":
    main()
