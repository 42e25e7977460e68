#define NV_IS_EXPORT_SYMBOL_PRESENT_close_fd 1
#define NV_IS_EXPORT_SYMBOL_GPL_screen_info 0
#define NV_IS_EXPORT_SYMBOL_PRESENT_follow_pfnmap_start 0
#define NV_IS_EXPORT_SYMBOL_PRESENT_timer_delete_sync 1
// Kernel version:             "6.1.0-57-amd64"
