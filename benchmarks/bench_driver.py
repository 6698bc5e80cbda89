"""Thin wrapper: the benchmark lives in vnpu/bench/driver.py (also run by `vnpu bench`)."""
from vnpu.bench.driver import main

if __name__ == "__main__":
    main()
