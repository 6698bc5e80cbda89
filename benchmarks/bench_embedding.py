"""Thin wrapper: the benchmark lives in vnpu/bench/embedding.py (also run by `vnpu bench`)."""
from vnpu.bench.embedding import main

if __name__ == "__main__":
    main()
