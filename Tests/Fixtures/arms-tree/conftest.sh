#!/bin/sh
# The arms fixture's own conftest script, written for nvbuild's tests in the
# shape nvbuild reads from NVIDIA's conftest.sh: a compile_test function whose
# case "$1" has one arm per test, called as
#   conftest.sh CC ARCH SOURCES OUTPUT compile_tests 'CFLAGS' TEST...
cd "$(dirname "$0")" || exit 1
CC="$1"
ARCH=$2
SOURCES=$3
OUTPUT=$4

# An out-of-tree package's exports are searched too when its folder exists.
NVIDIA_OOT_PATH="/usr/src/nvidia/nvidia-public"
MODULE_SYMVERS_PATHS="$OUTPUT/Module.symvers"
if [ -d "$NVIDIA_OOT_PATH" ]; then
    MODULE_SYMVERS_PATHS="$MODULE_SYMVERS_PATHS $NVIDIA_OOT_PATH/Module.symvers"
fi

compile_check_conftest() {
    #
    # Compile $1 after the header-presence results; a "functions" test is
    # inverted: the call fails to compile when the prototype exists.
    #
    CODE="$1"
    DEF="$2"
    CAT="$3"
    {
        cat conftest/headers.h
        echo "#include <linux/kconfig.h>"
        echo "$CODE"
    } > conftest$$.c
    if $CC $CFLAGS -c conftest$$.c -o conftest$$.o > /dev/null 2>&1; then
        compiled=1
    else
        compiled=0
    fi
    rm -f conftest$$.c conftest$$.o
    if [ "$CAT" = functions ]; then
        [ $compiled = 1 ] && echo "#undef $DEF" || echo "#define $DEF"
    else
        [ $compiled = 1 ] && echo "#define $DEF" || echo "#undef $DEF"
    fi
}

symbol_exported() {
    grep -q -e "	$1	.*	EXPORT_SYMBOL" $MODULE_SYMVERS_PATHS 2>/dev/null
}

compile_test() {
    case "$1" in
        fixture_arms_list_is_first)
            #
            # Whether list_is_first() has a prototype (v5.1).
            #
            CODE="
            #include <linux/list.h>
            void conftest_list_is_first(void) {
                list_is_first();
            }"

            compile_check_conftest "$CODE" "NV_FIXTURE_ARMS_LIST_IS_FIRST_PRESENT" "functions"
        ;;

        fixture_arms_mm_has_mmap_lock)
            #
            # Whether mm_struct has mmap_lock (renamed from mmap_sem in v5.8).
            #
            CODE="
            #include <linux/mm_types.h>
            int conftest_mm_has_mmap_lock(void) {
                return offsetof(struct mm_struct, mmap_lock);
            }"

            compile_check_conftest "$CODE" "NV_FIXTURE_ARMS_MM_HAS_MMAP_LOCK" "types"
        ;;

        fixture_arms_export_present_*)
            symbol=${1#fixture_arms_export_present_}
            if symbol_exported "$symbol"; then
                echo "#define NV_FIXTURE_ARMS_EXPORT_PRESENT_$symbol 1"
            else
                echo "#define NV_FIXTURE_ARMS_EXPORT_PRESENT_$symbol 0"
            fi
        ;;

        *)
            echo "Error: unknown conftest '$1' requested" >&2
            exit 1
        ;;
    esac
}

case "$5" in
    compile_tests)
        CFLAGS=$6
        shift 6
        for test in "$@"; do
            compile_test "$test"
        done
    ;;
esac
