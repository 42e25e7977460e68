// SPDX-License-Identifier: GPL-2.0
/* A module that calls into the fixture's OS-agnostic core. */
#include <linux/module.h>
#include <linux/init.h>

unsigned long nvcore_checksum(const unsigned char *bytes, unsigned long count);

static int __init nvcoreuser_init(void)
{
    static const unsigned char greeting[] = "nvbuild";

    pr_info("nvcoreuser: core checksum %lx\n", nvcore_checksum(greeting, sizeof(greeting) - 1));
    return 0;
}

static void __exit nvcoreuser_exit(void)
{
}

module_init(nvcoreuser_init);
module_exit(nvcoreuser_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("nvbuild full-tree fixture: a module linking an OS-agnostic core");
