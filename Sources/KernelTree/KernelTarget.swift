import Foundation

/// Everything nvbuild needs to know about one kernel it builds for.
public struct KernelTarget: Sendable, Equatable, Codable {
    /// `uname -r` of the target (from `include/config/kernel.release` or utsrelease.h).
    public var release: String
    /// The `make ARCH=` value the driver Makefile passes (x86_64, arm64, ...).
    public var arch: String
    /// The kernel's `arch/<dir>` name (x86 for x86_64 and i386).
    public var kernelArch: String
    /// The tree with `include/`, `arch/` sources (Debian's `-common` package).
    public var sourceDirectory: String
    /// The configured tree with `.config`, `include/generated`, `Module.symvers`.
    public var outputDirectory: String
    /// `/lib/modules/<release>` when it exists (installed modules, modules.dep).
    public var moduleDirectory: String?
    /// First word of `CONFIG_CC_VERSION_TEXT`: the compiler the kernel was built with.
    public var compiler: String?
    /// The full `CONFIG_CC_VERSION_TEXT`.
    public var compilerVersionText: String?
    /// Whether `compiler` can be found in PATH.
    public var compilerInstalled: Bool
    public var facts: ConfigFacts
    /// The parsed `.config`, read once by discovery; everything that asks about an option
    /// asks this. Not encoded (reports carry `facts`, not thousands of options): a decoded
    /// target has an empty one.
    public var config = KernelConfig(values: [:])

    private enum CodingKeys: String, CodingKey {
        case release, arch, kernelArch, sourceDirectory, outputDirectory, moduleDirectory
        case compiler, compilerVersionText, compilerInstalled, facts
    }

    /// Configuration facts that change how modules are built, signed and loaded.
    public struct ConfigFacts: Sendable, Equatable, Codable {
        public var preemptRT: Bool
        public var modversions: Bool
        public var moduleSig: Bool
        public var moduleSigForce: Bool
        public var moduleSigHash: String?
        /// none, gzip, xz or zstd (CONFIG_MODULE_COMPRESS_*).
        public var moduleCompression: String
        public var xen: Bool
    }

    public var configPath: String { outputDirectory + "/.config" }
    public var moduleSymversPath: String { outputDirectory + "/Module.symvers" }
    public var autoconfPath: String { outputDirectory + "/include/generated/autoconf.h" }
    public var splitTree: Bool { sourceDirectory != outputDirectory }
}

extension KernelTarget.ConfigFacts {
    public init(config: KernelConfig) {
        preemptRT = config.isEnabled("PREEMPT_RT") || config.isEnabled("PREEMPT_RT_FULL")
        modversions = config.isEnabled("MODVERSIONS")
        moduleSig = config.isEnabled("MODULE_SIG")
        moduleSigForce = config.isEnabled("MODULE_SIG_FORCE")
        moduleSigHash = config["MODULE_SIG_HASH"]
        if config.isEnabled("MODULE_COMPRESS_XZ") {
            moduleCompression = "xz"
        } else if config.isEnabled("MODULE_COMPRESS_ZSTD") {
            moduleCompression = "zstd"
        } else if config.isEnabled("MODULE_COMPRESS_GZIP") {
            moduleCompression = "gzip"
        } else {
            moduleCompression = "none"
        }
        xen = config.isEnabled("XEN") && !config.isEnabled("PARAVIRT")
    }
}
