"""Where files come from (`resolve`: a path, the LIPS_ASSETS folder, Ultralytics' download) and what a user
must fetch to run the demo and the benchmarks (`catalog`)."""
