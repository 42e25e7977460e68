// SPDX-License-Identifier: GPL-2.0
/*
 * A tiny module whose code paths depend on the conftest results, the way the
 * NVIDIA driver's do: it compiles only when the generated macros are present
 * and consistent (value macros are used with #if, so -Werror=undef-style
 * consumers see them defined).
 */
#include <linux/module.h>
#include <linux/mm.h>
#include "conftest.h"
#include "conftest/patches.h"

#if !defined(NV_IS_EXPORT_SYMBOL_PRESENT_close_fd)
#error "conftest/symbols.h must always define the export macros"
#endif

static const char *nvfixture_vm_flags_path(void)
{
#if defined(NV_VM_FLAGS_SET_PRESENT)
    return "vm_flags_set";
#else
    return "direct vm_flags";
#endif
}

static int __init nvfixture_init(void)
{
    unsigned int patches = 0;

    while (__nv_patches[patches].short_description != NULL)
        patches++;
    pr_info("nvfixture: vm flags via %s, close_fd exported: %d, of_dma_configure args: %d, patches: %u\n",
            nvfixture_vm_flags_path(), NV_IS_EXPORT_SYMBOL_PRESENT_close_fd,
            NV_OF_DMA_CONFIGURE_ARGUMENT_COUNT, patches);
    return 0;
}

static void __exit nvfixture_exit(void)
{
}

module_init(nvfixture_init);
module_exit(nvfixture_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("nvbuild fixture module using conftest results");
