"""`python -m benchmarks`: the benchmark (benchmarks/benchmark.py)."""

from benchmarks.benchmark import main

raise SystemExit(main())
