import Foundation
import NVBuildSupport

/// Finds kernel build trees and describes them. Pure file reads: nothing is run
/// except a PATH lookup for the compiler.
public struct KernelDiscovery: Sendable {
    /// Where `/lib/modules` lives; tests point this at a private copy.
    public var modulesRoot: String
    public var environment: [String: String]

    public init(modulesRoot: String = "/lib/modules", environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.modulesRoot = modulesRoot
        self.environment = environment
    }

    /// Every release under `modulesRoot` that has a `build` tree, newest first.
    public func installedKernels() -> [KernelTarget] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: modulesRoot)) ?? []
        return names
            .filter { FileManager.default.fileExists(atPath: "\(modulesRoot)/\($0)/build/.config") }
            .sorted { $0.compare($1, options: .numeric) == .orderedDescending }
            .compactMap { try? kernel(release: $0) }
    }

    /// The kernel nvbuild uses when none is named: the running one if its build
    /// tree exists, else the newest installed. The reason says which.
    public func defaultKernel() throws -> (KernelTarget, reason: String) {
        var uts = utsname()
        uname(&uts)
        let running = withUnsafeBytes(of: &uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if let target = try? kernel(release: running) {
            return (target, "the running kernel")
        }
        guard let newest = installedKernels().first else {
            throw UserError(
                .environment,
                "no kernel headers found under \(modulesRoot)/*/build; install them, e.g. apt-get install linux-headers-$(uname -r), or name a tree with --kernel-source/--kernel-output"
            )
        }
        return (newest, "the newest installed kernel (the running kernel \(running) has no headers)")
    }

    /// Describes `/lib/modules/<release>`, split into source and output trees as the driver Makefile does.
    public func kernel(release: String) throws -> KernelTarget {
        let modlib = "\(modulesRoot)/\(release)"
        let build = "\(modlib)/build"
        guard FileManager.default.fileExists(atPath: build + "/.config") else {
            throw UserError(
                .environment,
                "no kernel headers for \(release): \(build)/.config is missing; install them with apt-get install linux-headers-\(release)"
            )
        }
        var source = build
        for candidate in ["\(modlib)/source", "\(build)/source"] where isDirectory(candidate) {
            source = candidate
            break
        }
        return try kernel(sourceDirectory: source, outputDirectory: build, moduleDirectory: modlib)
    }

    /// Describes an explicit tree pair (the Makefile's SYSSRC/SYSOUT).
    public func kernel(sourceDirectory: String, outputDirectory: String?, moduleDirectory: String? = nil) throws -> KernelTarget {
        let output = outputDirectory ?? sourceDirectory
        guard isDirectory(sourceDirectory) else {
            throw UserError(.environment, "\(sourceDirectory): kernel source directory does not exist")
        }
        let configPath = output + "/.config"
        guard let configText = try TextFile.readIfPresent(configPath) else {
            throw UserError(
                .environment,
                "\(configPath): cannot read the kernel configuration; point --kernel-output at a configured kernel build tree (one with .config and include/generated)"
            )
        }
        let config = KernelConfig(parsing: configText)
        let release = Self.readRelease(outputDirectory: output) ?? URL(fileURLWithPath: moduleDirectory ?? output).lastPathComponent
        let versionText = config["CC_VERSION_TEXT"]
        let compiler = versionText?.split(separator: " ").first.map(String.init)
        let arch = Self.makeArch(config: config)
        return KernelTarget(
            release: release,
            arch: arch,
            kernelArch: Self.kernelArch(arch),
            sourceDirectory: sourceDirectory,
            outputDirectory: output,
            moduleDirectory: moduleDirectory.flatMap { isDirectory($0) ? $0 : nil },
            compiler: compiler,
            compilerVersionText: versionText,
            compilerInstalled: compiler.map { ProcessRunner.lookup($0, environment: environment) != nil } ?? false,
            facts: .init(config: config),
            config: config
        )
    }

    /// The release string the tree was configured for.
    public static func readRelease(outputDirectory: String) -> String? {
        // utsrelease.h holds what `uname -r` will say; Debian's kernel.release
        // holds the upstream version instead (6.1.192 for 6.1.0-56-amd64).
        if let text = try? String(contentsOfFile: outputDirectory + "/include/generated/utsrelease.h", encoding: .utf8),
            let open = text.firstIndex(of: "\""), let close = text.lastIndex(of: "\""), open < close
        {
            return String(text[text.index(after: open)..<close])
        }
        if let text = try? String(contentsOfFile: outputDirectory + "/include/config/kernel.release", encoding: .utf8) {
            let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if !value.isEmpty { return value }
        }
        return nil
    }

    static func makeArch(config: KernelConfig) -> String {
        if config.isEnabled("X86_64") { return "x86_64" }
        if config.isEnabled("X86_32") || config.isEnabled("X86") { return "i386" }
        if config.isEnabled("ARM64") { return "arm64" }
        if config.isEnabled("RISCV") { return "riscv" }
        if config.isEnabled("PPC64") { return "powerpc" }
        return "x86_64"
    }

    static func kernelArch(_ arch: String) -> String {
        switch arch {
        case "x86_64", "i386": return "x86"
        default: return arch
        }
    }

    private func isDirectory(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
    }
}
