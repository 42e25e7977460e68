// SPDX-License-Identifier: GPL-2.0
/* The second fixture module: consumes the DRM-side conftest results. */
#include <linux/module.h>
#include "conftest.h"

#if NV_DRM_MODESET_LOCK_ALL_END_ARGUMENT_COUNT != 3 && NV_DRM_MODESET_LOCK_ALL_END_ARGUMENT_COUNT != 2 && NV_DRM_MODESET_LOCK_ALL_END_ARGUMENT_COUNT != 0
#error "unexpected NV_DRM_MODESET_LOCK_ALL_END_ARGUMENT_COUNT"
#endif

static int __init nvfixture_drm_init(void)
{
#if defined(NV_DRM_CLIENT_SETUP_PRESENT)
    pr_info("nvfixture-drm: drm_client_setup() available\n");
#else
    pr_info("nvfixture-drm: legacy fbdev setup\n");
#endif
    return 0;
}

static void __exit nvfixture_drm_exit(void)
{
}

module_init(nvfixture_drm_init);
module_exit(nvfixture_drm_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("nvbuild fixture DRM-side module");
