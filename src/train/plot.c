#include "train/plot.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "io/file_io.h"

/* A run's series: four from its training rows, one from its evaluations. */
enum { S_LOSS, S_EVAL_LOSS, S_LR, S_GRAD_NORM, S_TOKENS_PER_S, N_SERIES };

/* The series' names in the SVG's class attributes (tests find them there). */
static const char *const series_class[N_SERIES] = {"loss", "eval-loss", "lr", "grad-norm", "tokens-per-s"};

/* Matplotlib's tab10: ten distinct colors, repeated after the tenth run. */
static const char *const run_colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                         "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
enum { N_COLORS = sizeof run_colors / sizeof run_colors[0] };

/* The layout in SVG units (pixels): a title line, the legend, then two rows
 * of two panels; a panel's cell holds its title, its plot area and the tick
 * labels around it. */
enum {
    WIDTH = 1000,
    MARGIN = 10,
    TITLE_H = 30,
    LEGEND_ROW_H = 20,
    CELL_W = (WIDTH - 2 * MARGIN) / 2,
    CELL_H = 290,
    PLOT_LEFT = 62,
    PLOT_RIGHT = 18,
    PLOT_TOP = 26,
    PLOT_BOTTOM = 42,
    MAX_TICKS = 16,
    LABEL_MAX = 72, /* bytes of a run's name in the legend */
    EVAL_DOT_SPACING = 8, /* pixels between evaluation dots where they crowd */
};

typedef struct series {
    double *step, *value; /* a NaN value is a gap */
    size_t n, cap;
} series;

typedef struct plot_run {
    char label[LABEL_MAX];
    series s[N_SERIES];
    double last_step, last_eval_loss; /* NaN: none */
} plot_run;

typedef struct axis {
    double lo, hi; /* the values at the ends */
    bool log;
    int n_ticks;
    double tick[MAX_TICKS];
    char text[MAX_TICKS][24];
} axis;

/* A panel's plot area and its axes. */
typedef struct panel {
    double x0, y0, w, h;
    axis x, y;
    bool has_data;
} panel;

typedef struct panel_spec {
    const char *title;
    int series[2], n_series;
    bool may_log;   /* log scale when every value is positive */
    bool from_zero; /* the y axis includes 0 */
} panel_spec;

static const panel_spec panel_specs[4] = {
    {"loss: training (solid), evaluation (dashed)", {S_LOSS, S_EVAL_LOSS}, 2, true, false},
    {"learning rate", {S_LR}, 1, false, true},
    {"gradient norm (before clipping)", {S_GRAD_NORM}, 1, true, false},
    {"tokens/s", {S_TOKENS_PER_S}, 1, false, true},
};

/* The SVG text being written; the first failed write is kept in ok. */
typedef struct svg {
    FILE *f;
    bool ok;
} svg;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void put(svg *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (o->ok && vfprintf(o->f, fmt, ap) < 0)
        o->ok = false;
    va_end(ap);
}

/* Text content or an attribute value, with XML's special characters
 * escaped; control characters, which XML 1.0 forbids, become '?'. */
static void put_escaped(svg *o, const char *s)
{
    for (; *s && o->ok; s++) {
        const unsigned char c = (unsigned char)*s;
        if (c == '&')
            put(o, "&amp;");
        else if (c == '<')
            put(o, "&lt;");
        else if (c == '>')
            put(o, "&gt;");
        else if (c == '"')
            put(o, "&quot;");
        else if (fputc(c < 0x20 ? '?' : c, o->f) == EOF)
            o->ok = false;
    }
}

/* ---- reading metrics.jsonl ---- */

static void push(series *s, double step, double value)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        double *steps = realloc(s->step, s->cap * sizeof *steps);
        if (!steps)
            mt_fatal("out of host memory reading metrics for a plot");
        s->step = steps;
        double *values = realloc(s->value, s->cap * sizeof *values);
        if (!values)
            mt_fatal("out of host memory reading metrics for a plot");
        s->value = values;
    }
    s->step[s->n] = step;
    s->value[s->n++] = value;
}

/* A row's number under key; null, a missing key or another type: a gap. */
static double number_or_gap(const json_t *row, const char *key)
{
    const json_t *v = json_object_get(row, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* One line of metrics.jsonl into the run's series; a line that does not
 * parse, or is neither a training nor an evaluation row, adds nothing. A
 * skipped step's loss and gradient norm are gaps: the update did not
 * happen, and they are what made it skip. */
static void add_row(plot_run *run, const char *line)
{
    json_t *row = json_loads(line, 0, NULL);
    const json_t *at = json_object_get(row, "step");
    const double step = json_is_number(at) ? json_number_value(at) : NAN;
    bool counted = false;
    if (isfinite(step) && json_object_get(row, "eval_loss")) {
        const double loss = number_or_gap(row, "eval_loss");
        push(&run->s[S_EVAL_LOSS], step, loss);
        if (isfinite(loss))
            run->last_eval_loss = loss;
        counted = true;
    } else if (isfinite(step) && json_object_get(row, "loss")) {
        const bool skipped = json_is_true(json_object_get(row, "skipped"));
        push(&run->s[S_LOSS], step, skipped ? NAN : number_or_gap(row, "loss"));
        push(&run->s[S_LR], step, number_or_gap(row, "lr"));
        push(&run->s[S_GRAD_NORM], step, skipped ? NAN : number_or_gap(row, "grad_norm"));
        push(&run->s[S_TOKENS_PER_S], step, number_or_gap(row, "tokens_per_s"));
        counted = true;
    }
    if (counted && !(run->last_step >= step))
        run->last_step = step;
    json_decref(row);
}

static bool read_run(plot_run *run, const char *dir, char *err, size_t errlen)
{
    char path[4096];
    if (!mt_path_join(path, sizeof path, dir, "metrics.jsonl", err, errlen))
        return false;
    FILE *f = fopen(path, "r");
    if (!f)
        return mt_errorf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0)
        add_row(run, line);
    const int e = errno;
    const bool failed = ferror(f);
    free(line);
    fclose(f); /* opened for reading: nothing to lose */
    return !failed || mt_errorf(err, errlen, "%s: cannot read: %s", path, strerror(e));
}

static void free_run(plot_run *run)
{
    for (int k = 0; k < N_SERIES; k++) {
        free(run->s[k].step);
        free(run->s[k].value);
    }
}

/* n bytes of name into label, cut at a character boundary with "..."
 * when they do not fit. */
static void copy_label(char *label, const char *name, size_t n)
{
    if (n < LABEL_MAX) {
        snprintf(label, LABEL_MAX, "%.*s", (int)n, name);
        return;
    }
    size_t cut = LABEL_MAX - 4;
    while (cut > 0 && ((unsigned char)name[cut] & 0xc0) == 0x80) /* a UTF-8 continuation byte */
        cut--;
    snprintf(label, LABEL_MAX, "%.*s...", (int)cut, name);
}

/* A run's name in the legend: the last component of its directory's path
 * (trailing slashes aside; "." is named by the working directory). */
static void base_name(char *label, const char *dir)
{
    size_t end = strlen(dir);
    while (end > 1 && dir[end - 1] == '/')
        end--;
    char cwd[4096];
    if (end == 1 && dir[0] == '.' && getcwd(cwd, sizeof cwd)) {
        base_name(label, cwd);
        return;
    }
    size_t start = end;
    while (start > 0 && dir[start - 1] != '/')
        start--;
    copy_label(label, dir + start, end - start);
}

/* Names the runs; two that share a directory name are told apart by the
 * paths as given. */
static void name_runs(plot_run *runs, const char *const *dirs, int n_runs)
{
    for (int i = 0; i < n_runs; i++)
        base_name(runs[i].label, dirs[i]);
    bool *shared = calloc((size_t)n_runs, sizeof *shared);
    if (!shared)
        mt_fatal("out of host memory naming %d runs", n_runs);
    for (int i = 0; i < n_runs; i++)
        for (int j = 0; j < n_runs; j++)
            shared[i] = shared[i] || (j != i && strcmp(runs[i].label, runs[j].label) == 0);
    for (int i = 0; i < n_runs; i++)
        if (shared[i])
            copy_label(runs[i].label, dirs[i], strlen(dirs[i]));
    free(shared);
}

/* ---- axes ---- */

/* A round spacing (1, 2 or 5 times a power of ten) that cuts span into
 * about target parts. */
static double nice_step(double span, int target)
{
    const double raw = span / target, mag = pow(10, floor(log10(raw)));
    const double f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

/* Digits after the point that tell apart ticks res apart. */
static int decimals(double res)
{
    const int d = -(int)floor(log10(res) + 1e-9);
    return d > 0 ? d : 0;
}

/* A tick's text: with k, M or G where the axis reaches 10^4, in scientific
 * notation where it stays under 10^-2, plain otherwise; res (the ticks'
 * spacing) sets the digits. */
static void tick_text(double v, double res, double reach, char *buf, size_t len)
{
    if (fabs(v) < res * 1e-6) {
        snprintf(buf, len, "0");
    } else if (reach >= 1e4) {
        const double unit = reach >= 1e9 ? 1e9 : reach >= 1e6 ? 1e6 : 1e3;
        snprintf(buf, len, "%.*f%s", decimals(res / unit), v / unit, unit == 1e9 ? "G" : unit == 1e6 ? "M" : "k");
    } else if (reach < 1e-2) {
        const int e = (int)floor(log10(fabs(v)) + 1e-9), digits = e + decimals(res);
        char mantissa[16];
        snprintf(mantissa, sizeof mantissa, "%.*f", digits > 0 ? digits : 0, v / pow(10, e));
        /* "1.0e-3" reads better as "1e-3" */
        char *point = strchr(mantissa, '.');
        if (point) {
            char *last = point + strlen(point) - 1;
            while (last > point && *last == '0')
                *last-- = '\0';
            if (last == point)
                *point = '\0';
        }
        snprintf(buf, len, "%.8se%d", mantissa, e);
    } else {
        snprintf(buf, len, "%.*f", decimals(res), v);
    }
}

static void add_tick(axis *a, double v, double res, double reach)
{
    if (a->n_ticks == MAX_TICKS)
        return;
    a->tick[a->n_ticks] = v;
    tick_text(v, res, reach, a->text[a->n_ticks], sizeof a->text[0]);
    a->n_ticks++;
}

/* A linear axis over [lo, hi], widened to round ticks at both ends. */
static void linear_axis(axis *a, double lo, double hi, int target)
{
    if (!(hi > lo)) { /* one value: room around it */
        const double pad = lo != 0 ? fabs(lo) * 0.1 : 1;
        lo -= pad;
        hi += pad;
    }
    const double step = nice_step(hi - lo, target);
    const double k0 = floor(lo / step + 1e-9), k1 = ceil(hi / step - 1e-9);
    *a = (axis){.lo = k0 * step, .hi = k1 * step};
    const double reach = fmax(fabs(a->lo), fabs(a->hi));
    for (double k = k0; k <= k1; k++)
        add_tick(a, k * step, step, reach);
}

/* A log axis over [lo, hi] (both positive), with a little room at the
 * ends: ticks at powers of ten when three or more fit, else at 1, 2 and 5
 * times them (each tick's text as its own power of ten needs), else (a
 * range within a factor of a few) at round linear steps. */
static void log_axis(axis *a, double lo, double hi)
{
    const double pad = hi > lo ? pow(hi / lo, 0.04) : 1.5;
    *a = (axis){.lo = lo / pad, .hi = hi * pad, .log = true};
    const int k0 = (int)ceil(log10(a->lo)), k1 = (int)floor(log10(a->hi));
    if (k1 - k0 >= 2) {
        const int every = (k1 - k0) / 8 + 1; /* at most nine */
        for (int k = k0; k <= k1; k += every)
            add_tick(a, pow(10, k), pow(10, k), pow(10, k));
        return;
    }
    static const double mantissas[3] = {1, 2, 5};
    for (int k = k0 - 1; k <= k1; k++)
        for (int m = 0; m < 3; m++) {
            const double v = mantissas[m] * pow(10, k);
            if (v >= a->lo && v <= a->hi)
                add_tick(a, v, pow(10, k), v);
        }
    if (a->n_ticks >= 3)
        return;
    a->n_ticks = 0;
    const double step = nice_step(a->hi - a->lo, 5);
    for (double k = ceil(a->lo / step); k * step <= a->hi; k++)
        add_tick(a, k * step, step, a->hi);
}

/* Where v lies along the axis, 0 at lo and 1 at hi. */
static double axis_frac(const axis *a, double v)
{
    if (a->log)
        return (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo));
    return (v - a->lo) / (a->hi - a->lo);
}

static double px(const panel *p, double step)
{
    return p->x0 + p->w * axis_frac(&p->x, step);
}

static double py(const panel *p, double value)
{
    return p->y0 + p->h * (1 - axis_frac(&p->y, value));
}

/* The panel's y axis from the finite values of its series over all runs. */
static void y_axis(panel *p, const panel_spec *spec, const plot_run *runs, int n_runs)
{
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n_runs; i++)
        for (int k = 0; k < spec->n_series; k++) {
            const series *s = &runs[i].s[spec->series[k]];
            for (size_t j = 0; j < s->n; j++)
                if (isfinite(s->value[j])) {
                    lo = fmin(lo, s->value[j]);
                    hi = fmax(hi, s->value[j]);
                }
        }
    p->has_data = lo <= hi;
    if (!p->has_data) {
        linear_axis(&p->y, 0, 1, 4);
    } else if (spec->may_log && lo > 0) {
        log_axis(&p->y, lo, hi);
    } else {
        if (spec->from_zero) {
            lo = fmin(lo, 0);
            hi = fmax(hi, 0);
        }
        /* Room at the ends, so that a line at the highest or lowest value
         * does not run along the frame (but one at 0 of an axis from 0). */
        const double room = 0.03 * (hi - lo);
        linear_axis(&p->y, spec->from_zero && lo == 0 ? lo : lo - room, hi + room, 5);
    }
}

/* ---- drawing ---- */

static void put_point(svg *o, const panel *p, const series *s, size_t i, bool first)
{
    put(o, "%s%.1f,%.1f", first ? "" : " ", px(p, s->step[i]), py(p, s->value[i]));
}

/* The finite points s[i0, i1) as a polyline, thinned to at most four per
 * pixel column (the first, the lowest, the highest and the last, in their
 * order), which keeps the line's envelope at any number of steps. */
static void put_polyline(svg *o, const panel *p, const series *s, size_t i0, size_t i1, const char *attrs)
{
    put(o, "<polyline %s points=\"", attrs);
    bool first = true;
    for (size_t g0 = i0; g0 < i1;) {
        const double col = floor(px(p, s->step[g0]));
        size_t g1 = g0 + 1, low = g0, high = g0;
        for (; g1 < i1 && floor(px(p, s->step[g1])) == col; g1++) {
            low = s->value[g1] < s->value[low] ? g1 : low;
            high = s->value[g1] > s->value[high] ? g1 : high;
        }
        if (g1 - g0 <= 4) {
            for (size_t i = g0; i < g1; i++, first = false)
                put_point(o, p, s, i, first);
        } else {
            const size_t keep[4] = {g0, low < high ? low : high, low < high ? high : low, g1 - 1};
            for (int k = 0; k < 4; k++)
                if (k == 0 || keep[k] != keep[k - 1]) {
                    put_point(o, p, s, keep[k], first);
                    first = false;
                }
        }
        g0 = g1;
    }
    put(o, "\"/>\n");
}

/* One series of one run: a line for each stretch between gaps, a dot for a
 * point alone between gaps. Evaluations are dashed, with white-ringed dots
 * that stand out of a noisy training line: one at each evaluation, or, where
 * they crowd, at those at least EVAL_DOT_SPACING apart. */
static void put_series(svg *o, const panel *p, const series *s, int series_id, int run, bool eval)
{
    const char *color = run_colors[run % N_COLORS];
    char cls[48], attrs[160];
    snprintf(cls, sizeof cls, "%s run-%d", series_class[series_id], run);
    snprintf(attrs, sizeof attrs, "class=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"%s\"%s", cls, color,
             eval ? "1.8" : "1.4", eval ? " stroke-dasharray=\"6 3\"" : "");
    double last_dot = -INFINITY;
    for (size_t i = 0; i < s->n;) {
        if (!isfinite(s->value[i])) {
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < s->n && isfinite(s->value[j]))
            j++;
        if (j - i >= 2)
            put_polyline(o, p, s, i, j, attrs);
        for (size_t k = i; k < j && (eval || j - i == 1); k++) {
            const double x = px(p, s->step[k]);
            if (j - i > 1 && x - last_dot < EVAL_DOT_SPACING)
                continue;
            put(o, "<circle class=\"%s\" cx=\"%.1f\" cy=\"%.1f\" r=\"%s\" fill=\"%s\"%s/>\n", cls, x,
                py(p, s->value[k]), eval ? "3.5" : "2", color, eval ? " stroke=\"white\"" : "");
            last_dot = x;
        }
        i = j;
    }
}

/* Grid lines and tick labels of both axes, the frame, and "step" below. */
static void put_axes(svg *o, const panel *p)
{
    put(o, "<path class=\"grid\" stroke=\"#e6e6e6\" stroke-width=\"1\" d=\"");
    for (int i = 0; i < p->x.n_ticks; i++)
        put(o, "M%.1f %.1fV%.1f", px(p, p->x.tick[i]), p->y0, p->y0 + p->h);
    for (int i = 0; p->has_data && i < p->y.n_ticks; i++)
        put(o, "M%.1f %.1fH%.1f", p->x0, py(p, p->y.tick[i]), p->x0 + p->w);
    put(o, "\"/>\n<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#888\"/>\n", p->x0,
        p->y0, p->w, p->h);
    put(o, "<g class=\"x-ticks\" font-size=\"11\" text-anchor=\"middle\" fill=\"#333\">\n");
    for (int i = 0; i < p->x.n_ticks; i++)
        put(o, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", px(p, p->x.tick[i]), p->y0 + p->h + 15, p->x.text[i]);
    put(o, "</g>\n<g class=\"y-ticks\" font-size=\"11\" text-anchor=\"end\" fill=\"#333\">\n");
    for (int i = 0; p->has_data && i < p->y.n_ticks; i++)
        put(o, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", p->x0 - 5, py(p, p->y.tick[i]) + 4, p->y.text[i]);
    put(o, "</g>\n<text class=\"axis-label\" x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\" "
        "fill=\"#555\">step</text>\n", p->x0 + p->w / 2, p->y0 + p->h + 32);
}

static void put_panel(svg *o, const panel_spec *spec, double cx, double cy, const plot_run *runs, int n_runs,
                      double max_step)
{
    panel p = {.x0 = cx + PLOT_LEFT, .y0 = cy + PLOT_TOP, .w = CELL_W - PLOT_LEFT - PLOT_RIGHT,
               .h = CELL_H - PLOT_TOP - PLOT_BOTTOM};
    linear_axis(&p.x, 0, max_step > 0 ? max_step : 1, 6);
    y_axis(&p, spec, runs, n_runs);
    put(o, "<g class=\"panel\">\n<text class=\"panel-title\" x=\"%.1f\" y=\"%.1f\" font-size=\"13\" "
        "font-weight=\"bold\">%s</text>\n", p.x0, cy + 17, spec->title);
    if (p.y.log)
        put(o, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\" fill=\"#777\">log scale</text>\n",
            p.x0 + p.w, cy + 17);
    put_axes(o, &p);
    if (!p.has_data)
        put(o, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\" fill=\"#999\">no data</text>\n",
            p.x0 + p.w / 2, p.y0 + p.h / 2);
    for (int k = 0; k < spec->n_series; k++) /* the evaluations over every run's training line */
        for (int i = 0; i < n_runs; i++)
            put_series(o, &p, &runs[i].s[spec->series[k]], spec->series[k], i, spec->series[k] == S_EVAL_LOSS);
    put(o, "</g>\n");
}

/* A run's legend entry: its name, last step and last evaluation loss. */
static void legend_text(const plot_run *run, char *buf, size_t len)
{
    if (!isfinite(run->last_step))
        snprintf(buf, len, "%s (no rows)", run->label);
    else if (isfinite(run->last_eval_loss))
        snprintf(buf, len, "%s (step %.0f, eval loss %.4g)", run->label, run->last_step, run->last_eval_loss);
    else
        snprintf(buf, len, "%s (step %.0f)", run->label, run->last_step);
}

/* The width of text at font size size: sans-serif characters average
 * about 0.6 of it (UTF-8 continuation bytes are not characters). */
static double text_width(const char *text, double size)
{
    size_t chars = 0;
    for (const char *c = text; *c; c++)
        chars += ((unsigned char)*c & 0xc0) != 0x80;
    return 0.6 * size * (double)chars;
}

/* Lays out the legend from baseline y0, an entry per run (a swatch of its
 * color and its text), wrapping at the width; draws it when o is not NULL.
 * Returns the number of rows. */
static int legend(svg *o, const plot_run *runs, int n_runs, double y0)
{
    double x = MARGIN;
    int rows = 1;
    if (o)
        put(o, "<g class=\"legend\" font-size=\"12\">\n");
    for (int i = 0; i < n_runs; i++) {
        char text[LABEL_MAX + 64];
        legend_text(&runs[i], text, sizeof text);
        const double w = 28 + text_width(text, 12) + 24;
        if (x > MARGIN && x + w > WIDTH - MARGIN) {
            x = MARGIN;
            rows++;
        }
        const double y = y0 + (rows - 1) * LEGEND_ROW_H;
        if (o) {
            put(o, "<path d=\"M%.1f %.1fh22\" stroke=\"%s\" stroke-width=\"3\"/>\n<text x=\"%.1f\" y=\"%.1f\">", x,
                y - 4, run_colors[i % N_COLORS], x + 28, y);
            put_escaped(o, text);
            put(o, "</text>\n");
        }
        x += w;
    }
    if (o)
        put(o, "</g>\n");
    return rows;
}

static void put_svg(svg *o, const plot_run *runs, int n_runs)
{
    const double legend_y = TITLE_H + 14;
    const int legend_rows = legend(NULL, runs, n_runs, legend_y);
    const double top = legend_y + (legend_rows - 1) * LEGEND_ROW_H + 10;
    const int height = (int)ceil(top + 2 * CELL_H + MARGIN);
    put(o, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
        "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n", WIDTH, height, WIDTH, height);
    put(o, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", WIDTH, height);
    put(o, "<text class=\"title\" x=\"%d\" y=\"22\" font-size=\"16\" font-weight=\"bold\">Training metrics", MARGIN);
    if (n_runs == 1) {
        put(o, " of ");
        put_escaped(o, runs[0].label);
    } else {
        put(o, " of %d runs", n_runs);
    }
    put(o, "</text>\n");
    legend(o, runs, n_runs, legend_y);
    double max_step = 0;
    for (int i = 0; i < n_runs; i++)
        max_step = isfinite(runs[i].last_step) ? fmax(max_step, runs[i].last_step) : max_step;
    for (int k = 0; k < 4; k++)
        put_panel(o, &panel_specs[k], MARGIN + (k % 2) * CELL_W, top + (k / 2) * CELL_H, runs, n_runs, max_step);
    put(o, "</svg>\n");
}

/* The SVG is composed in memory, then written to out_path.tmp (fsync'ed)
 * and renamed over out_path, so that a reader never sees half a plot. */
static bool write_svg(const plot_run *runs, int n_runs, const char *out_path, char *err, size_t errlen)
{
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    if (!f)
        return mt_errorf(err, errlen, "%s: cannot compose the plot: %s", out_path, strerror(errno));
    svg o = {f, true};
    put_svg(&o, runs, n_runs);
    const bool composed = fclose(f) == 0 && o.ok;
    char tmp[4096];
    bool ok = composed || mt_errorf(err, errlen, "%s: cannot compose the plot: out of memory", out_path);
    if (ok && snprintf(tmp, sizeof tmp, "%s.tmp", out_path) >= (int)sizeof tmp)
        ok = mt_errorf(err, errlen, "%s: the path is too long", out_path);
    ok = ok && mt_write_file_synced(tmp, text, size, err, errlen);
    if (ok && rename(tmp, out_path) != 0) {
        ok = mt_errorf(err, errlen, "%s: cannot rename %s into place: %s", out_path, tmp, strerror(errno));
        unlink(tmp);
    }
    free(text);
    return ok;
}

bool mt_plot_runs(const char *const *run_dirs, int n_runs, const char *out_path, char *err, size_t errlen)
{
    if (n_runs < 1)
        return mt_errorf(err, errlen, "%s: no run to plot", out_path);
    plot_run *runs = calloc((size_t)n_runs, sizeof *runs);
    if (!runs)
        mt_fatal("out of host memory plotting %d runs", n_runs);
    bool ok = true;
    for (int i = 0; ok && i < n_runs; i++) {
        runs[i].last_step = runs[i].last_eval_loss = NAN;
        ok = read_run(&runs[i], run_dirs[i], err, errlen);
    }
    if (ok) {
        name_runs(runs, run_dirs, n_runs);
        ok = write_svg(runs, n_runs, out_path, err, errlen);
    }
    for (int i = 0; i < n_runs; i++)
        free_run(&runs[i]);
    free(runs);
    return ok;
}
