// SPDX-License-Identifier: GPL-2.0
/* The smallest useful test module: it loads, says so, and unloads. */
#include <linux/init.h>
#include <linux/module.h>

static int __init nvbuild_plain_init(void)
{
	pr_info("nvbuild_plain: loaded\n");
	return 0;
}

static void __exit nvbuild_plain_exit(void)
{
	pr_info("nvbuild_plain: unloaded\n");
}

module_init(nvbuild_plain_init);
module_exit(nvbuild_plain_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("nvbuild plain obj-m fixture");
MODULE_VERSION("1.0");
