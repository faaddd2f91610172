from benchmarks.benchmark import main

raise SystemExit(main())
