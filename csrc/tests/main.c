/* The test runner: the harness's registry and main(); the tests register themselves. */
#define ET_TEST_MAIN
#include "et_test.h"
