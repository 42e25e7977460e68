#include <linux/module.h>
int nvb_export_plain(int x) { return x + 1; }
EXPORT_SYMBOL(nvb_export_plain);
static int __init nvb_init(void) { return 0; }
static void __exit nvb_exit(void) { }
module_init(nvb_init);
module_exit(nvb_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("nvbuild load test: plain exporter");
