"""`--demo`: the built-in Threads API simulator and a publishing pipeline (imported only for
--demo, the tests and the benchmark)."""
