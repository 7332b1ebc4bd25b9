/* Plots of runs: the metrics.jsonl of one or more run directories drawn as
 * one self-contained SVG with four panels against step (loss with the
 * evaluations, learning rate, gradient norm, tokens/s), each run in its own
 * color and named in the legend by its directory's name. Null values, and
 * the loss and gradient norm of skipped steps, are gaps in the lines; lines
 * that do not parse are left out. Long runs are thinned to a few points per
 * pixel column (first, lowest, highest, last), so the file stays small. */
#ifndef MT_PLOT_H
#define MT_PLOT_H

#include <stdbool.h>
#include <stddef.h>

/* Reads run_dirs[i]/metrics.jsonl for each of the n_runs runs and writes
 * the SVG to out_path through a temp file (out_path.tmp) and a rename.
 * Errors name the file: a missing or unreadable metrics.jsonl, or an
 * output that cannot be written. */
bool mt_plot_runs(const char *const *run_dirs, int n_runs, const char *out_path, char *err, size_t errlen);

#endif
