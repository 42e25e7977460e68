#include <linux/module.h>
extern int nvb_cycle_a(int x);
int nvb_cycle_b(int x) { return x > 0 ? nvb_cycle_a(x - 1) : 0; }
EXPORT_SYMBOL(nvb_cycle_b);
static int __init nvb_init(void) { return 0; }
static void __exit nvb_exit(void) { }
module_init(nvb_init);
module_exit(nvb_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("nvbuild load test: half of a dependency cycle");
