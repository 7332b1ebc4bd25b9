/* Plots of runs (src/train/plot.h): the SVG written from metrics.jsonl files
 * is well-formed XML, draws one line per stretch of each series between
 * gaps (nulls and skipped steps) with every point while there are few, dots
 * for points alone and for evaluations, names the runs in the legend and
 * labels its axes; a run with one row, with no rows and with 100k rows
 * plots (the last within 1 MB); a missing metrics.jsonl or an output that
 * cannot be written is an error naming the file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "testlib.h"

#include "train/plot.h"

static char err[1024];

/* Ten training steps: step 4 has null loss and gradient norm, step 6 is
 * skipped (finite values that must not be drawn), lr is null at step 9 and
 * tokens/s at step 1. Evaluations at steps 3 and 5, a null one at 8, one at
 * 10. A line that is not JSON and a cut last line are left out. */
static const char run_a_rows[] =
    "{\"step\":1,\"loss\":2.5,\"lr\":1e-4,\"grad_norm\":1.5,\"tokens\":64,\"tokens_per_s\":null,\"step_s\":0.1,"
    "\"mfu\":null,\"skipped\":false}\n"
    "{\"step\":2,\"loss\":2.4,\"lr\":2e-4,\"grad_norm\":1.4,\"tokens\":128,\"tokens_per_s\":1000,\"skipped\":false}\n"
    "{\"step\":3,\"loss\":2.3,\"lr\":3e-4,\"grad_norm\":1.3,\"tokens\":192,\"tokens_per_s\":1100,\"skipped\":false}\n"
    "{\"step\":3,\"eval_loss\":2.35,\"eval_ppl\":10.5,\"eval_accuracy\":0.1}\n"
    "{\"step\":4,\"loss\":null,\"lr\":3e-4,\"grad_norm\":null,\"tokens\":256,\"tokens_per_s\":1200,\"skipped\":true}\n"
    "{\"step\":5,\"loss\":2.1,\"lr\":3e-4,\"grad_norm\":1.1,\"tokens\":320,\"tokens_per_s\":1300,\"skipped\":false}\n"
    "{\"step\":5,\"eval_loss\":2.2,\"eval_ppl\":9.0,\"eval_accuracy\":null}\n"
    "not json at all\n"
    "{\"step\":6,\"loss\":2.0,\"lr\":3e-4,\"grad_norm\":1.0,\"tokens\":384,\"tokens_per_s\":1250,\"skipped\":true}\n"
    "{\"step\":7,\"loss\":1.9,\"lr\":2e-4,\"grad_norm\":0.9,\"tokens\":448,\"tokens_per_s\":1200,\"skipped\":false}\n"
    "{\"step\":8,\"loss\":1.8,\"lr\":2e-4,\"grad_norm\":0.8,\"tokens\":512,\"tokens_per_s\":1150,\"skipped\":false}\n"
    "{\"step\":8,\"eval_loss\":null,\"eval_ppl\":null,\"eval_accuracy\":null}\n"
    "{\"step\":9,\"loss\":1.7,\"lr\":null,\"grad_norm\":0.7,\"tokens\":576,\"tokens_per_s\":1100,\"skipped\":false}\n"
    "{\"step\":10,\"loss\":1.6,\"lr\":1e-4,\"grad_norm\":0.6,\"tokens\":640,\"tokens_per_s\":1050,\"skipped\":false}\n"
    "{\"step\":10,\"eval_loss\":1.8,\"eval_ppl\":6.0,\"eval_accuracy\":0.5}\n"
    "{\"step\":11,\"loss\":1.";

static const char run_b_rows[] =
    "{\"step\":1,\"loss\":3.0,\"lr\":1e-3,\"grad_norm\":2.0,\"tokens\":64,\"tokens_per_s\":900,\"skipped\":false}\n"
    "{\"step\":2,\"loss\":2.9,\"lr\":1e-3,\"grad_norm\":2.1,\"tokens\":128,\"tokens_per_s\":950,\"skipped\":false}\n"
    "{\"step\":3,\"loss\":2.8,\"lr\":1e-3,\"grad_norm\":2.2,\"tokens\":192,\"tokens_per_s\":980,\"skipped\":false}\n";

/* A run directory (under the test's temp dir) holding metrics.jsonl with
 * text; NULL text: the directory alone. Returns its path. */
static const char *make_run(const char *name, const char *text)
{
    static char dir[8][512];
    static int k;
    char *d = dir[k++ % 8];
    snprintf(d, sizeof dir[0], "%s", tl_temp_path(name));
    assert_true(mkdir(d, 0755) == 0 || access(d, F_OK) == 0);
    if (text) {
        char path[600];
        snprintf(path, sizeof path, "%s/metrics.jsonl", d);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        assert_true(fputs(text, f) >= 0);
        assert_int_equal(fclose(f), 0);
    }
    return d;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

/* Fails the test unless the entity at p is one the plot writes. */
static void check_entity(const char *p)
{
    if (strncmp(p, "&amp;", 5) && strncmp(p, "&lt;", 4) && strncmp(p, "&gt;", 4) && strncmp(p, "&quot;", 6))
        fail_msg("an unescaped '&' at \"%.20s\"", p);
}

/* Fails the test unless text is one <svg> element whose tags balance (each
 * start tag closed in order, or closing itself with "/>"), with no bare '<'
 * or '&' in text or attribute values, and nothing but space after it. */
static void check_well_formed(const char *text)
{
    const char *p = text;
    while (is_space(*p))
        p++;
    if (strncmp(p, "<svg", 4) != 0)
        fail_msg("the SVG starts with \"%.20s\", not <svg", p);
    char open[32][32];
    int depth = 0;
    do {
        while (*p && *p != '<') {
            if (*p == '&')
                check_entity(p);
            p++;
        }
        assert_int_equal(*p, '<');
        const bool closing = p[1] == '/';
        p += closing ? 2 : 1;
        const size_t n = strcspn(p, " \t\n/>");
        assert_true(n > 0 && n < sizeof open[0]);
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)n, p);
        p += n;
        char quote = 0;
        for (; *p && (quote || *p != '>'); p++) {
            if (*p == '"' || *p == '\'')
                quote = quote == *p ? 0 : quote ? quote : *p;
            else if (quote && *p == '<')
                fail_msg("a '<' in an attribute of <%s>", name);
            else if (quote && *p == '&')
                check_entity(p);
        }
        assert_int_equal(*p, '>');
        if (closing) {
            if (depth == 0 || strcmp(open[depth - 1], name) != 0)
                fail_msg("</%s> closes <%s>", name, depth ? open[depth - 1] : "nothing");
            depth--;
        } else if (p[-1] != '/') {
            assert_true(depth < 32);
            snprintf(open[depth++], sizeof open[0], "%s", name);
        }
        p++;
    } while (depth > 0);
    while (is_space(*p))
        p++;
    if (*p)
        fail_msg("text after </svg>: \"%.20s\"", p);
}

/* How many elements start with head (e.g. "<circle class=\"loss run-0\""). */
static int count(const char *svg, const char *head)
{
    int n = 0;
    for (const char *p = strstr(svg, head); p; p = strstr(p + 1, head))
        n++;
    return n;
}

/* The number of points of each polyline of class cls, in document order,
 * into points[] (room for max); returns how many polylines. */
static int polyline_points(const char *svg, const char *cls, int *points, int max)
{
    char head[64];
    snprintf(head, sizeof head, "<polyline class=\"%s\"", cls);
    int n = 0;
    for (const char *p = strstr(svg, head); p; p = strstr(p + 1, head)) {
        assert_true(n < max);
        const char *at = strstr(p, "points=\""), *end = strchr(p, '>');
        assert_true(at && at < end);
        points[n] = 0;
        for (const char *c = at + 8; *c != '"'; c++)
            points[n] += *c == ',';
        n++;
    }
    return n;
}

static void expect_polylines(const char *svg, const char *cls, int n, const int *want)
{
    int got[16];
    const int lines = polyline_points(svg, cls, got, 16);
    if (lines != n)
        fail_msg("%d polylines of class \"%s\", expected %d", lines, cls, n);
    for (int i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("polyline %d of class \"%s\" has %d points, expected %d", i, cls, got[i], want[i]);
}

static void two_runs_with_gaps(void **state)
{
    (void)state;
    const char *dirs[2] = {make_run("run-a", run_a_rows), make_run("run-b", run_b_rows)};
    const char *out = tl_temp_path("two.svg");
    if (!mt_plot_runs(dirs, 2, out, err, sizeof err))
        fail_msg("%s", err);
    char *svg = tl_read_text(out);
    check_well_formed(svg);

    /* Gaps split the lines; a point alone is a dot; every point is kept. */
    expect_polylines(svg, "loss run-0", 2, (int[]){3, 4});
    assert_int_equal(count(svg, "<circle class=\"loss run-0\""), 1);
    expect_polylines(svg, "grad-norm run-0", 2, (int[]){3, 4});
    assert_int_equal(count(svg, "<circle class=\"grad-norm run-0\""), 1);
    expect_polylines(svg, "lr run-0", 1, (int[]){8});
    assert_int_equal(count(svg, "<circle class=\"lr run-0\""), 1);
    expect_polylines(svg, "tokens-per-s run-0", 1, (int[]){9});
    assert_int_equal(count(svg, "<circle class=\"tokens-per-s run-0\""), 0);
    expect_polylines(svg, "eval-loss run-0", 1, (int[]){2});
    assert_int_equal(count(svg, "<circle class=\"eval-loss run-0\""), 3);
    static const char *const series[] = {"loss run-1", "lr run-1", "grad-norm run-1", "tokens-per-s run-1"};
    for (int i = 0; i < 4; i++)
        expect_polylines(svg, series[i], 1, (int[]){3});
    assert_int_equal(count(svg, "class=\"eval-loss run-1\""), 0);

    /* Each run in its own color, named in the legend; titles and axes. */
    assert_non_null(strstr(svg, "stroke=\"#1f77b4\""));
    assert_non_null(strstr(svg, "stroke=\"#ff7f0e\""));
    assert_non_null(strstr(svg, ">run-a (step 10, eval loss 1.8)</text>"));
    assert_non_null(strstr(svg, ">run-b (step 3)</text>"));
    assert_non_null(strstr(svg, ">Training metrics of 2 runs</text>"));
    assert_int_equal(count(svg, ">step</text>"), 4);
    assert_non_null(strstr(svg, ">loss: training (solid), evaluation (dashed)</text>"));
    assert_non_null(strstr(svg, ">learning rate</text>"));
    assert_non_null(strstr(svg, ">gradient norm (before clipping)</text>"));
    assert_non_null(strstr(svg, ">tokens/s</text>"));
    /* Round ticks: steps 0 to 10 by 2; lr from 0 in scientific notation. */
    for (int i = 0; i <= 10; i += 2) {
        char tick[32];
        snprintf(tick, sizeof tick, ">%d</text>", i);
        assert_true(count(svg, tick) >= 4);
    }
    assert_non_null(strstr(svg, ">1e-3</text>"));
    assert_null(strstr(svg, "nan"));
    free(svg);
    assert_int_equal(access(tl_temp_path("two.svg.tmp"), F_OK), -1);
}

/* One row: dots, no lines; no evaluations: none drawn. A trailing slash
 * still names the run. An empty file: every panel says so. */
static void one_row_and_none(void **state)
{
    (void)state;
    const char *one = make_run("one-row", "{\"step\":1,\"loss\":2.5,\"lr\":1e-4,\"grad_norm\":1.5,\"tokens\":64,"
                                          "\"tokens_per_s\":1000,\"skipped\":false}\n");
    char slashed[600];
    snprintf(slashed, sizeof slashed, "%s/", one);
    const char *dirs[1] = {slashed};
    const char *out = tl_temp_path("one.svg");
    if (!mt_plot_runs(dirs, 1, out, err, sizeof err))
        fail_msg("%s", err);
    char *svg = tl_read_text(out);
    check_well_formed(svg);
    assert_int_equal(count(svg, "<polyline"), 0);
    static const char *const dots[] = {"loss", "lr", "grad-norm", "tokens-per-s"};
    for (int i = 0; i < 4; i++) {
        char head[64];
        snprintf(head, sizeof head, "<circle class=\"%s run-0\"", dots[i]);
        assert_int_equal(count(svg, head), 1);
    }
    assert_int_equal(count(svg, "eval-loss"), 0);
    assert_non_null(strstr(svg, ">Training metrics of one-row</text>"));
    free(svg);

    dirs[0] = make_run("no-rows", "");
    assert_true(mt_plot_runs(dirs, 1, out, err, sizeof err));
    svg = tl_read_text(out);
    check_well_formed(svg);
    assert_int_equal(count(svg, ">no data</text>"), 4);
    assert_non_null(strstr(svg, ">no-rows (no rows)</text>"));
    free(svg);
}

/* Two runs with the same directory name are told apart by their paths; a
 * name with XML's special characters is escaped. */
static void names_are_distinct_and_escaped(void **state)
{
    (void)state;
    make_run("a", NULL);
    make_run("b", NULL);
    const char *dirs[3] = {make_run("a/same", run_b_rows), make_run("b/same", run_b_rows),
                           make_run("x<&>\"y", run_b_rows)};
    const char *out = tl_temp_path("names.svg");
    if (!mt_plot_runs(dirs, 3, out, err, sizeof err))
        fail_msg("%s", err);
    char *svg = tl_read_text(out);
    check_well_formed(svg);
    char want[600];
    snprintf(want, sizeof want, ">%s (step 3)</text>", dirs[0]);
    assert_non_null(strstr(svg, want));
    snprintf(want, sizeof want, ">%s (step 3)</text>", dirs[1]);
    assert_non_null(strstr(svg, want));
    assert_non_null(strstr(svg, ">x&lt;&amp;&gt;&quot;y (step 3)</text>"));
    free(svg);
}

/* 100k steps, evaluated every 100: thinned to a few points per pixel
 * column, the file stays under 1 MB. */
static void many_rows_stay_small(void **state)
{
    (void)state;
    const char *dir = make_run("long", NULL);
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int s = 1; s <= 100000; s++) {
        const double loss = 3.0 / (1 + s / 1000.0) + 0.1 * (s % 13) / 13.0;
        fprintf(f, "{\"step\":%d,\"loss\":%.5f,\"lr\":%.3e,\"grad_norm\":%.4f,\"tokens\":%d,\"tokens_per_s\":%d,"
                   "\"skipped\":false}\n", s, loss, 1e-3 * (1 - s / 2e5), 1 + 0.5 * (s % 17) / 17.0, s * 64,
                100000 + (s * 31) % 5000);
        if (s % 100 == 0)
            fprintf(f, "{\"step\":%d,\"eval_loss\":%.5f,\"eval_ppl\":1,\"eval_accuracy\":null}\n", s, loss);
    }
    assert_int_equal(fclose(f), 0);
    const char *dirs[1] = {dir};
    const char *out = tl_temp_path("long.svg");
    if (!mt_plot_runs(dirs, 1, out, err, sizeof err))
        fail_msg("%s", err);
    struct stat st;
    assert_int_equal(stat(out, &st), 0);
    printf("100k steps: %lld bytes of SVG\n", (long long)st.st_size);
    assert_true(st.st_size < 1000000);
    char *svg = tl_read_text(out);
    check_well_formed(svg);
    int points[4];
    assert_int_equal(polyline_points(svg, "loss run-0", points, 4), 1);
    assert_true(points[0] > 500 && points[0] <= 4 * 500); /* four per column of a plot narrower than 500 */
    assert_int_equal(polyline_points(svg, "eval-loss run-0", points, 4), 1);
    assert_int_equal(points[0], 1000);
    assert_true(count(svg, "<circle class=\"eval-loss run-0\"") < 100); /* crowded dots thinned */
    free(svg);
}

static void errors_name_the_file(void **state)
{
    (void)state;
    const char *dirs[2] = {make_run("fine", run_b_rows), make_run("empty-run", NULL)};
    const char *out = tl_temp_path("missing.svg");
    assert_false(mt_plot_runs(dirs, 2, out, err, sizeof err));
    char want[600];
    snprintf(want, sizeof want, "%s/metrics.jsonl", dirs[1]);
    tl_expect_error(err, want, "No such file or directory");
    assert_int_equal(access(out, F_OK), -1);

    dirs[1] = tl_temp_path("no-such-dir");
    assert_false(mt_plot_runs(dirs, 2, out, err, sizeof err));
    tl_expect_error(err, "no-such-dir/metrics.jsonl", NULL);

    out = tl_temp_path("no-such-dir/plot.svg");
    assert_false(mt_plot_runs(dirs, 1, out, err, sizeof err));
    tl_expect_error(err, out, "cannot create");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(two_runs_with_gaps),
        cmocka_unit_test(one_row_and_none),
        cmocka_unit_test(names_are_distinct_and_escaped),
        cmocka_unit_test(many_rows_stay_small),
        cmocka_unit_test(errors_name_the_file),
    };
    return cmocka_run_group_tests(tests, tl_temp_dir_setup, tl_temp_dir_teardown);
}
