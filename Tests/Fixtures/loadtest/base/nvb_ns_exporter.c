#include <linux/module.h>
int nvb_export_ns(int x) { return x + 3; }
EXPORT_SYMBOL_NS_GPL(nvb_export_ns, NVB_TEST);
static int __init nvb_init(void) { return 0; }
static void __exit nvb_exit(void) { }
module_init(nvb_init);
module_exit(nvb_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("nvbuild load test: namespaced exporter");
