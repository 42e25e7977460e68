#include <libkmod.h>
#include <stdarg.h>
#include <stdio.h>

/* libkmod hands its log lines over as a format and a va_list; Swift cannot format a
 * va_list portably, so this formats the line here and passes the finished text on. */
typedef void (*nvb_kmod_log_sink)(void *context, int priority, const char *function, const char *message);

struct nvb_kmod_log_target {
    nvb_kmod_log_sink sink;
    void *context;
};

static inline void nvb_kmod_log_forward(void *data, int priority, const char *file, int line,
                                        const char *function, const char *format, va_list arguments)
{
    (void)file;
    (void)line;
    const struct nvb_kmod_log_target *target = (const struct nvb_kmod_log_target *)data;
    char message[2048];
    vsnprintf(message, sizeof message, format, arguments);
    target->sink(target->context, priority, function, message);
}

/* Routes the context's log to target (which must outlive the context). */
static inline void nvb_kmod_capture_log(struct kmod_ctx *ctx, const struct nvb_kmod_log_target *target)
{
    kmod_set_log_fn(ctx, nvb_kmod_log_forward, target);
}
