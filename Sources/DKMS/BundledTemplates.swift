// Generated from Templates/dkms.conf.mustache; DKMSTests fails when this copy is stale.
// Kept in the binary so an installed nvbuild needs no resource folder.

enum BundledTemplates {
    static let dkmsConf = #"""
{{% CONTENT_TYPE: TEXT}}
# dkms.conf for {{name}} {{version}}, written by nvbuild {{generator}} from
# Templates/dkms.conf.mustache. Every value is literal or one of DKMS's own
# variables; check edits with: nvbuild dkms lint dkms.conf
PACKAGE_NAME="{{name}}"
PACKAGE_VERSION="{{version}}"
AUTOINSTALL="yes"
{{#rejectsPreemptRT}}

# The tree's build sanity checks refuse PREEMPT_RT kernels.
BUILD_EXCLUSIVE_CONFIG="!CONFIG_PREEMPT_RT"
{{/rejectsPreemptRT}}

# One record per module the tree's Kbuild files add to obj-m.
{{#modules}}
BUILT_MODULE_NAME[{{index}}]="{{name}}"
BUILT_MODULE_LOCATION[{{index}}]="{{location}}"
DEST_MODULE_LOCATION[{{index}}]="{{destination}}"
{{/modules}}

{{#nvidia}}
# 'make' is quoted so DKMS does not add KERNELRELEASE, which would make the
# tree's Makefile act as if Kbuild had read it. When nvbuild is installed it
# runs the conftest probe first; otherwise the tree's Kbuild runs its own.
MAKE[0]="if command -v nvbuild >/dev/null 2>&1; then nvbuild probe --tree . --kernel ${kernelver} && 'make' -j{{jobs}} KERNEL_UNAME=${kernelver} modules; else 'make' -j{{jobs}} KERNEL_UNAME=${kernelver} modules; fi"
CLEAN="'make' KERNEL_UNAME=${kernelver} clean"
{{/nvidia}}
{{^nvidia}}
# The kernel's Kbuild builds the tree in DKMS's build folder.
MAKE[0]="'make' -j{{jobs}} -C ${kernel_source_dir} M=${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build modules"
CLEAN="'make' -C ${kernel_source_dir} M=${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build clean"
{{/nvidia}}
"""#
}
