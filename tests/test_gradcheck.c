/* Every op's backward against central finite differences of its forward, in
 * f64 on the CPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "testlib.h"

#define GRADCHECK_BOUND 1e-6

static void gradcheck_case(void **state)
{
    const tl_case *k = *state;
    double err = tl_gradcheck(k, 1);
    if (!(err <= GRADCHECK_BOUND))
        fail_msg("%s: gradient relative error %.3e exceeds %.0e", k->name, err, GRADCHECK_BOUND);
}

int main(void)
{
    struct CMUnitTest tests[64];
    for (int i = 0; i < tl_n_cases; i++)
        tests[i] = (struct CMUnitTest){tl_cases[i].name, gradcheck_case, NULL, NULL, (void *)&tl_cases[i]};
    return _cmocka_run_group_tests("gradcheck", tests, (size_t)tl_n_cases, NULL, NULL);
}
