#include <linux/module.h>
extern int nvb_export_plain(int x);
static int __init nvb_init(void) { return nvb_export_plain(-1) == 0 ? 0 : 0; }
static void __exit nvb_exit(void) { }
module_init(nvb_init);
module_exit(nvb_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("nvbuild load test: user of nvb_export_plain built against an altered CRC");
