/* The generated conftest/ headers, in the order NVIDIA's common/inc/conftest.h includes them. */
#ifndef NVFIXTURE_CONFTEST_H
#define NVFIXTURE_CONFTEST_H
#include "conftest/headers.h"
#include "conftest/functions.h"
#include "conftest/generic.h"
#include "conftest/macros.h"
#include "conftest/symbols.h"
#include "conftest/types.h"
#endif
