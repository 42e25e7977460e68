import Foundation
import Kbuild
import KernelTree
import SourceTree
import Testing

@Suite("driver tree and Kbuild command line")
struct DriverTreeTests {
    @Test func plainTree() throws {
        let tree = try DriverTree.load(path: Fixtures.plainModule)
        #expect(tree.style == .plain)
        #expect(tree.modules == [ModuleSpec(name: "nvbuild_plain", location: "", kbuildFile: "Kbuild")])
        #expect(!tree.requestsConftest)
    }

    @Test func objMForms() {
        let text = """
            # comment obj-m += no.o
            obj-m += a.o b.o \\
                c.o
            obj-m := d.o
            obj-m += sub/
            obj-$(CONFIG_X) += e.o
            """
        let found = DriverTree.objectsForTesting(text)
        #expect(found.modules == ["d"])
        #expect(found.subdirectories == ["sub"])
        #expect(DriverTree.objectsForTesting("obj-m += a.o b.o \\\n  c.o\n").modules == ["a", "b", "c"])
    }

    @Test func missingTreeIsAUsageError() {
        #expect(throws: (any Error).self) { try DriverTree.load(path: "/nonexistent/tree") }
    }

    /// The argv is what kernel-open/Makefile computes for a Debian split tree.
    @Test func nvidiaInvocationMirrorsTheMakefile() throws {
        let kernel = try KernelDiscovery().kernel(release: Fixtures.kernels[0])
        let tree = DriverTree(
            path: "/src/kernel-open", style: .nvidia,
            modules: ["nvidia", "nvidia-uvm"].map { ModuleSpec(name: $0, location: "", kbuildFile: "\($0)/\($0).Kbuild") },
            requestsConftest: true, rejectsPreemptRT: true)
        let inv = KbuildInvocation.modules(tree: tree, buildDirectory: "/b/tree", kernel: kernel, jobs: 4)
        #expect(inv.arguments == [
            "make", "-k", "-j4", "LD=ld", "CC=gcc-12", "OBJDUMP=objdump",
            "KBUILD_OUTPUT=/lib/modules/\(Fixtures.kernels[0])/build",
            "-C", "/lib/modules/\(Fixtures.kernels[0])/source", "M=/b/tree", "ARCH=x86_64",
            "NV_KERNEL_SOURCES=/lib/modules/\(Fixtures.kernels[0])/source",
            "NV_KERNEL_OUTPUT=/lib/modules/\(Fixtures.kernels[0])/build",
            "NV_KERNEL_MODULES=nvidia nvidia-uvm", "INSTALL_MOD_DIR=kernel/drivers/video", "NV_SPECTRE_V2=0", "modules",
        ])
        let subset = KbuildInvocation.modules(tree: tree, buildDirectory: "/b/tree", kernel: kernel, modules: ["nvidia-uvm"], jobs: 1, compiler: CompilerCommand(parsing: "ccache gcc-12"))
        #expect(subset.arguments.contains("CC=ccache gcc-12"))
        #expect(subset.arguments.contains("NV_KERNEL_MODULES=nvidia-uvm"))
    }

    @Test func plainInvocationUsesTheKernelsCompiler() throws {
        let kernel = try KernelDiscovery().kernel(release: Fixtures.kernels[1])
        let tree = try DriverTree.load(path: Fixtures.plainModule)
        let inv = KbuildInvocation.modules(tree: tree, buildDirectory: "/b", kernel: kernel, jobs: 2)
        #expect(inv.arguments == ["make", "-k", "-j2", "CC=x86_64-linux-gnu-gcc-12", "-C", "/lib/modules/\(Fixtures.kernels[1])/build", "M=/b", "modules"])
        // A jobserver client has no -j of its own; distcc's settings go to make's environment.
        let distcc = CompilerCommand(compiler: "x86_64-linux-gnu-gcc-12").launched(CompilerLaunch(distccHosts: "w1/4"))
        let client = KbuildInvocation.modules(tree: tree, buildDirectory: "/b", kernel: kernel, jobs: nil, compiler: distcc)
        #expect(client.arguments == ["make", "-k", "CC=distcc x86_64-linux-gnu-gcc-12", "-C", "/lib/modules/\(Fixtures.kernels[1])/build", "M=/b", "modules"])
        #expect(client.environment == ["DISTCC_HOSTS": "w1/4"])
    }
}
