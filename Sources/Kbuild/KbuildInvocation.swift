import Foundation
import KernelTree
import SourceTree

/// The `make` command line that builds a driver tree's modules for one kernel,
/// computed as data so it can be checked before anything runs.
public struct KbuildInvocation: Sendable, Equatable, Codable {
    public var arguments: [String]
    public var workingDirectory: String
    /// Variables make (and so every compiler it starts) gets on top of nvbuild's own
    /// environment: the launchers' settings (DISTCC_HOSTS, CCACHE_PREFIX).
    public var environment: [String: String] = [:]

    public init(arguments: [String], workingDirectory: String, environment: [String: String] = [:]) {
        self.arguments = arguments
        self.workingDirectory = workingDirectory
        self.environment = environment
    }

    /// Builds the argv the tree's own Makefile would hand to the kernel's Kbuild.
    ///
    /// - `buildDirectory`: the copy of the tree that `M=` points at.
    /// - `compiler`: `CC` for Kbuild, launchers included (`ccache gcc`,
    ///   `distcc x86_64-linux-gnu-gcc-12`). `nil` uses the kernel's own compiler
    ///   (first word of CONFIG_CC_VERSION_TEXT) when it is installed.
    /// - `jobs`: make's -j; nil for a make that takes its jobs from a jobserver it is
    ///   handed (`JobSlots.jobserverCommand`), where a -j of its own would start another pool.
    public static func modules(
        tree: DriverTree,
        buildDirectory: String,
        kernel: KernelTarget,
        modules: [String]? = nil,
        jobs: Int?,
        compiler: CompilerCommand? = nil,
        verbose: Bool = false
    ) -> KbuildInvocation {
        // make hands $(CC) to the shell in recipes: quote the words that need it.
        let cc = (compiler ?? kernel.installedCompiler)?.shellText
        // -k: past a failing object make still compiles every other one, so each module's
        // own errors are in the log and the modules whose objects compiled can be linked.
        var args = ["make", "-k"]
        if let jobs { args.append("-j\(max(1, jobs))") }
        switch tree.style {
        case .nvidia:
            // Mirrors kernel-open/Makefile: Kbuild is entered through the source
            // tree, the output tree passed as KBUILD_OUTPUT when they differ.
            args += ["LD=ld", "CC=\(cc ?? "cc")", "OBJDUMP=objdump"]
            if kernel.splitTree { args.append("KBUILD_OUTPUT=\(kernel.outputDirectory)") }
            if verbose { args.append("V=1") }
            args += [
                "-C", kernel.sourceDirectory,
                "M=\(buildDirectory)",
                "ARCH=\(kernel.arch)",
                "NV_KERNEL_SOURCES=\(kernel.sourceDirectory)",
                "NV_KERNEL_OUTPUT=\(kernel.outputDirectory)",
                "NV_KERNEL_MODULES=\((modules ?? tree.moduleNames).joined(separator: " "))",
                "INSTALL_MOD_DIR=kernel/drivers/video",
                "NV_SPECTRE_V2=0",
            ]
        case .plain:
            // The usual out-of-tree Makefile: `make -C <build tree> M=$(PWD)`.
            if let cc { args.append("CC=\(cc)") }
            if verbose { args.append("V=1") }
            args += ["-C", kernel.outputDirectory, "M=\(buildDirectory)"]
        }
        args.append("modules")
        return KbuildInvocation(arguments: args, workingDirectory: buildDirectory, environment: compiler?.environment ?? [:])
    }

    /// The command as a shell would show it, for logs and --verbose.
    public var commandLine: String {
        arguments.map { arg in
            arg.allSatisfy({ $0.isLetter || $0.isNumber || "-_=./+:,@".contains($0) }) ? arg : "'" + arg.replacingOccurrences(of: "'", with: "'\\''") + "'"
        }.joined(separator: " ")
    }
}
