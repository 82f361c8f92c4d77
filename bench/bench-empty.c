/* A library that does nothing. run.py preloads it into the mixed workload as
 * the control for the run-time overhead figure: what preloading any library
 * does to a program (its memory layout shifts), apart from what dmtcp does. */
int bench_empty_preload;
