// SPDX-License-Identifier: GPL-2.0
/* Fails to compile on purpose, so build failure reporting can be tested. */
#include <linux/module.h>

static int __init nvbuild_broken_init(void)
{
	return nvbuild_missing_helper(42);
}

module_init(nvbuild_broken_init);
MODULE_LICENSE("GPL");
