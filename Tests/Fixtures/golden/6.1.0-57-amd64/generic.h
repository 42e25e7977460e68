#define NV_VM_FAULT_T_IS_PRESENT
#undef NV_GRID_BUILD
#undef NV_GRID_BUILD_CSP
#define NV_IS_EXPORT_SYMBOL_PRESENT_timer_delete_sync 1
#undef NV_MLNX_IB_PEER_MEM_SYMBOLS_PRESENT
// Kernel version:             "6.1.0-57-amd64"
