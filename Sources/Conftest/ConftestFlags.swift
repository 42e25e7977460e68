import Foundation
import KernelTree
import NVBuildSupport

/// The compiler command line a driver tree's Kbuild gives every conftest
/// compile (NV_CONFTEST_CFLAGS): conftest.sh's build_cflags, the tree's
/// ccflags-y, and the conftest-only additions. Computed as data, so it can be
/// compared and hashed before anything runs.
public struct ConftestFlags: Sendable, Equatable, Codable {
    public var compiler: CompilerCommand
    public var flags: [String]

    public init(compiler: CompilerCommand, flags: [String]) {
        self.compiler = compiler
        self.flags = flags
    }

    /// Inputs of the computation that come from running things (compiler
    /// queries), kept separate so the composition stays a pure function.
    public struct CompilerFacts: Sendable, Equatable, Codable {
        /// `$CC -print-file-name=include`.
        public var includeDirectory: String
        /// Whether `$CC -mfentry` compiles an empty file.
        public var acceptsMfentry: Bool

        public init(includeDirectory: String, acceptsMfentry: Bool) {
            self.includeDirectory = includeDirectory
            self.acceptsMfentry = acceptsMfentry
        }

        public static func query(compiler: CompilerCommand, runner: ProcessRunner = ProcessRunner()) async throws -> CompilerFacts {
            let include = try await runner.run(compiler.argv + ["-print-file-name=include"])
            let dir = FileManager.default.temporaryDirectory.path + "/nvbuild-fentry-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try Data().write(to: URL(fileURLWithPath: dir + "/empty.c"))
            let fentry = try await runner.run(compiler.argv + ["-mfentry", "-c", "-x", "c", "empty.c", "-o", "empty.o"], workingDirectory: dir)
            return CompilerFacts(
                includeDirectory: include.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines),
                acceptsMfentry: fentry.succeeded
            )
        }
    }

    /// build_cflags: the base flags every conftest compile starts from.
    public static func baseFlags(kernel: KernelTarget, compiler facts: CompilerFacts, autoconf: String, environment: [String: String]) -> [String] {
        let sources = kernel.sourceDirectory
        let output = kernel.outputDirectory
        let headers = sources + "/include"
        var kernelArch = kernel.arch
        if kernel.arch == "i386" || kernel.arch == "x86_64", FileManager.default.fileExists(atPath: sources + "/arch/x86") {
            kernelArch = "x86"
        }
        let autoconfText = (try? String(contentsOfFile: autoconf, encoding: .utf8)) ?? ""
        func autoconfHas(_ option: String) -> Bool {
            autoconfText.range(of: "#define \(option) 1") != nil
        }
        // Marked with a fixed tag instead of conftest.sh's PID: nothing reads it, and a stable
        // text keeps the flags (and so the result cache key) the same from run to run.
        var flags = [
            "-O2", "-D__KERNEL__",
            "-DKBUILD_BASENAME=\"#conftest\"", "-DKBUILD_MODNAME=\"#conftest\"",
            "-nostdinc", "-isystem", facts.includeDirectory,
            "-Wno-implicit-function-declaration", "-Wno-strict-prototypes",
        ]
        var mach: [String] = []
        if autoconfHas("CONFIG_XEN") && !autoconfHas("CONFIG_PARAVIRT") {
            mach.append("-I\(headers)/asm/mach-xen")
        }
        let archDir = "\(sources)/arch/\(kernelArch)"
        let machDirs = ((try? FileManager.default.contentsOfDirectory(atPath: archDir)) ?? [])
            .filter { $0.hasPrefix("mach-") }.sorted()
        for dir in machDirs where autoconfHas("CONFIG_ARCH_" + dir.dropFirst("mach-".count).uppercased()) {
            mach.append("-I\(archDir)/\(dir)/include")
        }
        if kernel.arch == "arm" { mach.append("-D__LINUX_ARM_ARCH__=7") }
        mach.append("-I\(headers)/asm-\(kernelArch)/mach-default")
        mach.append("-I\(sources)/arch/\(kernelArch)/include/asm/mach-default")
        flags += mach
        if output != sources {
            flags += ["-I\(output)/include2", "-I\(output)/include"]
        }
        flags += ["-include", autoconf]
        flags += [
            "-I\(headers)", "-I\(headers)/uapi", "-I\(headers)/xen", "-I\(output)/include/generated/uapi",
            "-I\(sources)/arch/\(kernelArch)/include", "-I\(sources)/arch/\(kernelArch)/include/uapi",
            "-I\(output)/arch/\(kernelArch)/include/generated", "-I\(output)/arch/\(kernelArch)/include/generated/uapi",
        ]
        if let params = environment["BUILD_PARAMS"], !params.isEmpty {
            flags.append("-D\(params)")
        }
        if autoconfHas("CONFIG_HAVE_FENTRY") && facts.acceptsMfentry {
            flags += ["-mfentry", "-DCC_USING_FENTRY"]
        }
        return flags
    }

    /// The path of the autoconf header conftest includes (split trees take it from the output tree).
    public static func autoconfPath(kernel: KernelTarget) -> String {
        let base = kernel.splitTree ? kernel.outputDirectory + "/include" : kernel.sourceDirectory + "/include"
        let generated = base + "/generated/autoconf.h"
        return FileManager.default.fileExists(atPath: generated) ? generated : base + "/linux/autoconf.h"
    }

    /// The NVIDIA Kbuild's ccflags-y for a tree, then the conftest-only additions the tree's
    /// Kbuild names (NV_CONFTEST_CFLAGS lines), in Kbuild order.
    public static func kbuildFlags(tree: ConftestRequests, kernel: KernelTarget, environment: [String: String]) -> [String] {
        let kbuild = (try? String(contentsOfFile: tree.path + "/Kbuild", encoding: .utf8)) ?? ""
        var flags = ["-I\(tree.path)/common/inc", "-I\(tree.path)"]
        flags += ["-Wall", "-Wno-cast-qual", "-Wno-format-extra-args", "-D__KERNEL__", "-DMODULE", "-DNVRM"]
        if let version = tree.driverVersion { flags.append("-DNV_VERSION_STRING=\\\"\(version)\\\"") }
        if let host1x = environment["SYSSRCHOST1X"], !host1x.isEmpty { flags.append("-I\(host1x)") }
        flags.append(environment["PLATFORM_IS_ANDROID"] == "1" ? "-DNV_FILESYSTEM_ACCESS_AVAILABLE=0" : "-DNV_FILESYSTEM_ACCESS_AVAILABLE=1")
        flags.append("-Wno-unused-function")
        let debug = environment["NV_BUILD_TYPE"] == "debug"
        if !debug { flags.append("-Wuninitialized") }
        flags.append("-fno-strict-aliasing")
        if kernel.arch == "arm64" { flags.append("-mstrict-align") }
        if debug { flags.append("-g") }
        flags.append("-ffreestanding")
        if kernel.arch == "arm64" { flags += ["-mgeneral-regs-only", "-march=armv8-a", "-mno-outline-atomics"] }
        if kernel.arch == "x86_64" { flags += ["-mno-red-zone", "-mcmodel=kernel"] }
        flags.append("-DNV_UVM_ENABLE")
        flags.append("-Werror=undef")
        flags.append("-DNV_SPECTRE_V2=\(environment["SPECTRE_V2_RETPOLINE"] ?? "0")")
        flags.append("-DNV_KERNEL_INTERFACE_LAYER")
        if FileManager.default.fileExists(atPath: "/proc/sgi_uv") { flags.append("-DNV_CONFIG_X86_UV") }
        if environment["VGX_FORCE_VFIO_PCI_CORE"] != nil { flags.append("-DNV_VGPU_FORCE_VFIO_PCI_CORE") }
        flags.append(environment["WARNINGS_AS_ERRORS"] == "1" ? "-Werror" : "-Wno-error")

        // The conftest-only additions.
        flags.append("-fno-pie")
        flags += kernelStandardFlags(kernel: kernel)
        flags.append("-Wno-pointer-sign")
        for optional in ["-fshort-wchar", "-Werror=incompatible-pointer-types", "-fms-extensions"]
        where kbuild.contains("NV_CONFTEST_CFLAGS += $(call cc-option,\(optional),)") {
            flags.append(optional)
        }
        flags.append("-Wno-error")
        return flags
    }

    /// `$(filter -std=%,$(KBUILD_CFLAGS))`: the C standard the kernel's Makefile selects.
    static func kernelStandardFlags(kernel: KernelTarget) -> [String] {
        guard let makefile = try? String(contentsOfFile: kernel.sourceDirectory + "/Makefile", encoding: .utf8) else { return [] }
        for line in makefile.split(separator: "\n") where line.hasPrefix("KBUILD_CFLAGS") || line.hasPrefix("\t") || line.hasPrefix(" ") {
            if line.hasPrefix("KBUILD_CFLAGS"), let r = line.range(of: "-std=") {
                return [String(line[r.lowerBound...].prefix { $0 != " " && $0 != "\t" })]
            }
        }
        // Older Makefiles set it inside a multi-line KBUILD_CFLAGS assignment.
        if let r = makefile.range(of: "-std=gnu") {
            return [String(makefile[r.lowerBound...].prefix { $0 != " " && $0 != "\t" && $0 != "\n" })]
        }
        return []
    }

    /// The compiler the driver Makefile would use (KernelTarget.conftestCompiler).
    public static func compilerCommand(kernel: KernelTarget, override: String?, environment: [String: String]) -> CompilerCommand {
        kernel.conftestCompiler(override: override, environment: environment)
    }
}
