import Foundation
import KernelTree
import ModuleELF
import NVBuildSupport

/// What the target kernel's loader checks modules against: its exports
/// (Module.symvers), its vermagic, the size of its `struct module`, its
/// signer and the configuration options that change the loader's verdicts.
public struct KernelModel: Sendable {
    public var release: String
    /// (major, minor) of the release: the loader's check order changed over time.
    public var version: (Int, Int)
    public var vermagic: String?
    public var structModuleSize: Int?
    public var signer: String?
    public var modversions: Bool
    /// CONFIG_MODULE_SIG: unsigned modules taint the kernel.
    public var moduleSignatures: Bool
    public var signatureEnforced: Bool
    /// How this boot treats signatures (`modules verify --secure-boot`, `--cmdline`, `--trust`):
    /// when set, every module's signature is checked against its trusted certificates.
    public var signaturePolicy: SignaturePolicy?
    public var allowMissingNamespaceImports: Bool
    public var forceLoad: Bool
    /// The format the kernel decompresses modules in itself; `.none` without CONFIG_MODULE_DECOMPRESS.
    public var kernelDecompression: ModuleCompression
    /// How the target's modprobe gives compressed modules to the kernel (kmod 31 and later:
    /// the file itself when the kernel unpacks its format).
    public var compressedHandoff: CompressedModuleHandoff = .kernel
    /// Exports by symbol, as Module.symvers lists them, except that `module` is the
    /// owner's name: "vmlinux" or a module name (`-` as `_`, no directory or suffix).
    public var exports: [String: SymbolExport]
    /// Modules compiled into the kernel (modules.builtin).
    public var builtinModules: Set<String>

    /// Builds the model of an installed kernel: its build tree for Module.symvers
    /// and .config, its module tree for a reference module (vermagic, signer,
    /// struct module size).
    public init(target: KernelTarget, tree: ModuleTree) throws {
        release = target.release
        let numbers = target.release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        version = (numbers.first ?? 0, numbers.count > 1 ? numbers[1] : 0)
        let config = target.config
        modversions = config.isEnabled("MODVERSIONS")
        moduleSignatures = config.isEnabled("MODULE_SIG")
        signatureEnforced = config.isEnabled("MODULE_SIG_FORCE")
        allowMissingNamespaceImports = config.isEnabled("MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS")
        forceLoad = config.isEnabled("MODULE_FORCE_LOAD")
        kernelDecompression = Self.decompression(config)
        guard FileManager.default.fileExists(atPath: target.moduleSymversPath) else {
            throw UserError(
                .environment,
                "\(target.moduleSymversPath) is missing: the kernel's exports are unknown; install the full headers package (linux-headers-\(target.release))"
            )
        }
        exports = [:]
        builtinModules = []
        try addSymvers(at: target.moduleSymversPath)
        let modulesDirectory = tree.moduleDirectory
        if let builtin = try? String(contentsOfFile: modulesDirectory + "/modules.builtin", encoding: .utf8) {
            builtinModules = Set(builtin.split(separator: "\n").map { Self.moduleName(fromPath: String($0)) })
        }
        // A module the distribution built with the kernel carries the kernel's vermagic,
        // struct module size and signer.
        let dep = (try? String(contentsOfFile: modulesDirectory + "/modules.dep", encoding: .utf8)) ?? ""
        let firstLine = dep.drop { $0 == "\n" }.prefix { $0 != "\n" }
        if !firstLine.isEmpty {
            let first = String(firstLine.prefix { $0 != ":" })
            let reference = try tree.facts(ofFile: first.hasPrefix("/") ? first : modulesDirectory + "/" + first)
            vermagic = reference.vermagic
            structModuleSize = reference.thisModuleSize
            signer = reference.signer
        }
    }

    /// Adds the exports of a Module.symvers (the kernel's, or an out-of-tree package's).
    public mutating func addSymvers(at path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw UserError(.environment, "\(path): cannot read this Module.symvers; check the path")
        }
        // modpost writes about one line per 70 bytes.
        exports.reserveCapacity(exports.count + text.utf8.count / 64)
        // Lines come grouped by module: name each module once.
        var previousModule: String?
        var owner = ""
        ModuleSymvers.forEachExport(in: text) { export in
            if export.module != previousModule {
                previousModule = export.module
                owner = export.module == "vmlinux" ? "vmlinux" : Self.moduleName(fromPath: export.module)
            }
            var owned = export
            owned.module = owner
            exports[export.symbol] = owned
        }
    }

    /// The CRC the kernel checks a user of `export` against: none without modversions.
    public func checkedCRC(_ export: SymbolExport) -> UInt32? {
        modversions ? export.crc : nil
    }

    /// The one format the kernel's module_decompress unpacks: the CONFIG_MODULE_COMPRESS_*
    /// it was built with, when CONFIG_MODULE_DECOMPRESS is set.
    public static func decompression(_ config: KernelConfig) -> ModuleCompression {
        guard config.isEnabled("MODULE_DECOMPRESS") else { return .none }
        if config.isEnabled("MODULE_COMPRESS_XZ") { return .xz }
        if config.isEnabled("MODULE_COMPRESS_ZSTD") { return .zstd }
        if config.isEnabled("MODULE_COMPRESS_GZIP") { return .gzip }
        return .none
    }

    static func moduleName(fromPath path: String) -> String {
        var name = String(path.split(separator: "/").last ?? "")
        for suffix in [".xz", ".zst", ".gz", ".ko"] where name.hasSuffix(suffix) { name.removeLast(suffix.count) }
        guard name.utf8.contains(UInt8(ascii: "-")) else { return name }
        guard name.utf8.allSatisfy({ $0 < 0x80 }) else { return name.replacingOccurrences(of: "-", with: "_") }
        return String(decoding: name.utf8.map { $0 == UInt8(ascii: "-") ? UInt8(ascii: "_") : $0 }, as: UTF8.self)
    }

    func atLeast(_ major: Int, _ minor: Int) -> Bool {
        version.0 > major || (version.0 == major && version.1 >= minor)
    }
}
