import DKMS
import Foundation
import SourceTree
import Testing

/// Reading a whole source package's top-level Makefile (NVIDIA's layout, in the fixture).
@Suite struct FullTreeTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().path + "/Fixtures"

    @Test func theFixturesCoreIsReadFromItsTopLevelMakefile() throws {
        let tree = try #require(try FullTree.detect(path: Self.fixtures + "/full-tree"))
        #expect(tree.kbuildDirectory == "kernel-open")
        #expect(tree.kbuildTree.binaryCores == ["nvcoreuser/nvcore.o_binary"])
        #expect(tree.cores == [FullTree.Core(makeDirectory: "src/nvcore", objectName: "nvcore.o", binaryPath: "nvcoreuser/nvcore.o_binary")])
    }

    @Test func aKbuildTreeIsNotAFullTree() throws {
        #expect(try FullTree.detect(path: Self.fixtures + "/kernel-open") == nil)
        #expect(try FullTree.detect(path: Self.fixtures + "/full-tree/kernel-open") == nil)
        #expect(try FullTree.detect(path: Self.fixtures + "/plain-module") == nil)
    }

    /// NVIDIA's shape with two cores, and a Makefile whose core rule does not say where
    /// the object comes from (an error naming the Makefile, never a silent guess).
    @Test func nvidiaShapedMakefiles() throws {
        let root = FileManager.default.temporaryDirectory.path + "/nvbuild-fulltree-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/kernel-open/nvidia", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: root + "/kernel-open/nvidia-modeset", withIntermediateDirectories: true)
        try "NV_KERNEL_MODULES ?= $(wildcard nvidia nvidia-modeset)\n".write(toFile: root + "/kernel-open/Makefile", atomically: true, encoding: .utf8)
        try "obj-m += nvidia.o\nNVIDIA_BINARY_OBJECT := $(src)/nvidia/nv-kernel.o_binary\n"
            .write(toFile: root + "/kernel-open/nvidia/nvidia.Kbuild", atomically: true, encoding: .utf8)
        try "obj-m += nvidia-modeset.o\nNV_MODESET_BINARY := $(src)/nvidia-modeset/nv-modeset-kernel.o_binary\n"
            .write(toFile: root + "/kernel-open/nvidia-modeset/nvidia-modeset.Kbuild", atomically: true, encoding: .utf8)
        let makefile = """
            nv_kernel_o                = src/nvidia/$(OUTPUTDIR)/nv-kernel.o
            nv_kernel_o_binary         = kernel-open/nvidia/nv-kernel.o_binary
            nv_modeset_kernel_o        = src/nvidia-modeset/$(OUTPUTDIR)/nv-modeset-kernel.o
            nv_modeset_kernel_o_binary = kernel-open/nvidia-modeset/nv-modeset-kernel.o_binary
            include utils.mk
            .PHONY: $(nv_kernel_o)
            $(nv_kernel_o):
            \t$(MAKE) -C src/nvidia
            $(nv_kernel_o_binary): $(nv_kernel_o)
            \tcd $(dir $@) && ln -sf ../../$^ $(notdir $@)
            .PHONY: $(nv_modeset_kernel_o)
            $(nv_modeset_kernel_o):
            \t$(MAKE) -C src/nvidia-modeset
            $(nv_modeset_kernel_o_binary): $(nv_modeset_kernel_o)
            \tcd $(dir $@) && ln -sf ../../$^ $(notdir $@)
            .PHONY: modules
            modules: $(nv_kernel_o_binary) $(nv_modeset_kernel_o_binary)
            \t$(MAKE) -C kernel-open modules

            """
        try makefile.write(toFile: root + "/Makefile", atomically: true, encoding: .utf8)
        let tree = try #require(try FullTree.detect(path: root))
        #expect(tree.cores == [
            FullTree.Core(makeDirectory: "src/nvidia", objectName: "nv-kernel.o", binaryPath: "nvidia/nv-kernel.o_binary"),
            FullTree.Core(makeDirectory: "src/nvidia-modeset", objectName: "nv-modeset-kernel.o", binaryPath: "nvidia-modeset/nv-modeset-kernel.o_binary"),
        ])

        try makefile.replacingOccurrences(of: "\t$(MAKE) -C src/nvidia\n", with: "\ttrue\n")
            .write(toFile: root + "/Makefile", atomically: true, encoding: .utf8)
        #expect {
            try FullTree.detect(path: root)
        } throws: { error in
            "\(error)".hasPrefix("\(root)/Makefile: the rule for nvidia/nv-kernel.o_binary does not name a core object")
        }
    }

    /// dkms.conf of a whole source package: modules in the Kbuild tree, the top-level make,
    /// and nvbuild's probe of the Kbuild tree first when that tree requests conftest results.
    @Test func fullTreeConfRunsTheTopLevelMake() throws {
        let fullTree = try #require(try FullTree.detect(path: Self.fixtures + "/full-tree"))
        var spec = DKMSPackageSpec(name: "nvcore", version: "1.0", fullTree: fullTree)
        let plain = DKMSConf.parse(try DKMSPackager.renderConf(spec))
        #expect(plain.value("BUILT_MODULE_LOCATION") == "kernel-open")
        #expect(plain.value("MAKE") == "'make' -j${parallel_jobs} KERNEL_UNAME=${kernelver} modules")
        #expect(plain.value("CLEAN") == "'make' KERNEL_UNAME=${kernelver} clean")
        spec.probes = true
        let probing = DKMSConf.parse(try DKMSPackager.renderConf(spec))
        #expect(probing.value("MAKE")?.hasPrefix("if command -v nvbuild >/dev/null 2>&1; then nvbuild probe --tree kernel-open --kernel ${kernelver} && 'make' ") == true)
        #expect(DKMSLinter.lint(probing).isEmpty)
    }
}
