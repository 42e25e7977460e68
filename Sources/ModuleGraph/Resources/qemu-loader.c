/* The initramfs init of `nvbuild modules try` (QemuTrial): mount devtmpfs, then for
 * each plan line `<flags> <path>` make one finit_module call, print the kernel's
 * records that appeared meanwhile and the errno, and finally power off.
 * Built with gcc -static at run time; embedded in the nvbuild binary. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report_records(int kmsg, int index, FILE *out)
{
    char record[8192];
    for (;;) {
        ssize_t n = read(kmsg, record, sizeof record - 1);
        if (n < 0) {
            if (errno == EPIPE) continue; /* overwritten records: keep reading */
            return;                       /* EAGAIN: nothing more */
        }
        record[n] = 0;
        char *text = strchr(record, ';');
        if (!text) continue;
        *text++ = 0;
        text[strcspn(text, "\n")] = 0;
        int prefix = atoi(record);
        if (prefix >> 3) continue; /* not from the kernel (facility 0) */
        fprintf(out, "NVB-MSG %d %d %s\n", index, prefix & 7, text);
    }
}

int main(void)
{
    /* The kernel names the loading process in some refusals (lockdown's "Lockdown: <comm>:"):
     * be called what loads modules on a real system. */
    prctl(PR_SET_NAME, "modprobe", 0, 0, 0);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    FILE *out = fopen("/dev/ttyS0", "w");
    if (!out) out = stdout;
    setvbuf(out, NULL, _IOLBF, 0);
    FILE *plan = fopen("/plan", "r");
    int kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
    char line[4096];
    int index = 0;
    fprintf(out, "NVB-START\n");
    while (plan && fgets(line, sizeof line, plan)) {
        line[strcspn(line, "\n")] = 0;
        char *path = strchr(line, ' ');
        if (!path) continue;
        *path++ = 0;
        lseek(kmsg, 0, SEEK_END);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        long rc = syscall(SYS_finit_module, fd, "", atoi(line));
        int err = rc == 0 ? 0 : errno;
        close(fd);
        report_records(kmsg, index, out);
        fprintf(out, "NVB-LOAD %d %d\n", index, err);
        index++;
    }
    fprintf(out, "NVB-DONE\n");
    fflush(out);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
