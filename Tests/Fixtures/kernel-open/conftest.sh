#!/bin/sh
# The fixture's own conftest script, for tests nvbuild's catalog does not
# define. Same calling convention as NVIDIA's conftest.sh:
#   conftest.sh CC ARCH SOURCES OUTPUT compile_tests 'CFLAGS' TEST...
cd "$(dirname "$0")" || exit 1
CC=$1
shift 4
verb=$1
shift
[ "$verb" = compile_tests ] || exit 0
CFLAGS=$1
shift
for name in "$@"; do
    case $name in
    fixture_file_operations_has_fop_flags)
        # file_operations gained fop_flags in v6.12.
        src=fixture$$.c
        {
            cat conftest/headers.h
            printf '#include <linux/kconfig.h>\n#include <linux/stddef.h>\n#include <linux/fs.h>\nint fixture_probe(const struct file_operations *f) { return f->fop_flags != 0; }\n'
        } > $src
        if $CC $CFLAGS -c $src -o fixture$$.o >/dev/null 2>&1; then
            echo "#define NV_FIXTURE_FOP_FLAGS_PRESENT"
        else
            echo "#undef NV_FIXTURE_FOP_FLAGS_PRESENT"
        fi
        rm -f $src fixture$$.o
        ;;
    *)
        echo "Error: unknown conftest '$name' requested" >&2
        exit 1
        ;;
    esac
done
