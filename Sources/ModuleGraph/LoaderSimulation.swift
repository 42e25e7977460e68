import Foundation
import KernelTree
import ModuleELF
import NVBuildSupport

/// One module to load, in order.
public struct PlannedLoad: Sendable, Equatable, Codable {
    public var name: String
    public var path: String
}

/// What loading one module did (try) or will do (verify): the same shape for both,
/// so reports can be compared line by line.
public struct LoadResult: Sendable, Equatable {
    public var module: String
    public var path: String
    public var loads: Bool
    /// The errno the load syscall returns (0 when it loads).
    public var errno: Int32
    /// The kernel's messages during this load, in order.
    public var messages: [String]
    /// Remarks that are not kernel messages (a dependency cycle, a hung boot).
    public var notes: [Diagnostic]
    /// The signature as the kernel's trusted keys judge it, when signatures were checked.
    public var signature: SignatureFinding?

    public init(module: String, path: String, loads: Bool, errno: Int32, messages: [String], notes: [Diagnostic] = []) {
        self.module = module
        self.path = path
        self.loads = loads
        self.errno = errno
        self.messages = messages
        self.notes = notes
    }

    public var errnoName: String { Errno.name(errno) }

    /// The report line shared by verify and try.
    public var summary: String {
        if loads { return "\(module): loads" + (messages.first.map { " (\($0))" } ?? "") }
        return "\(module): fails with \(errnoName)" + (messages.first.map { ": \($0)" } ?? " (no kernel message)")
    }
}

public enum Errno {
    static let names: [Int32: String] = [
        0: "OK", 1: "EPERM", 2: "ENOENT", 8: "ENOEXEC", 12: "ENOMEM", 14: "EFAULT", 16: "EBUSY", 17: "EEXIST",
        22: "EINVAL", 61: "ENODATA", 65: "ENOPKG", 74: "EBADMSG", 126: "ENOKEY", 129: "EKEYREJECTED", 38: "ENOSYS",
        110: "ETIMEDOUT",
    ]
    public static func name(_ value: Int32) -> String { names[value] ?? "errno \(value)" }
}

/// A simulation of the kernel's module loader for one boot: modules are loaded
/// in the given order into a fresh kernel, and the kernel-wide state that
/// changes messages (taints, once-only warnings, loaded modules) carries from
/// one load to the next. The check order follows kernel/module/main.c and
/// version.c of the target's release line.
public struct LoaderSimulation {
    public let kernel: KernelModel
    private var loaded: [String: Loaded] = [:]
    private var taintedOutOfTree = false
    private var taintedProprietary = false
    private var taintedUnsigned = false
    private var taintedForced = false
    private var debugLocksOn = true
    private var warnedMissingVersion = false

    struct Loaded {
        var proprietary: Bool
    }

    public init(kernel: KernelModel) {
        self.kernel = kernel
        visibleExports = kernel.exports.compactMapValues { export in
            export.module == "vmlinux" ? Visible(export: export, crc: kernel.checkedCRC(export)) : nil
        }
    }

    /// Loads every module in order, returning one result each.
    public mutating func load(_ plan: [LoaderFacts]) -> [LoadResult] {
        plan.map { load($0) }
    }

    /// Loads one module. `signature` is its signature checked against the trusted keys of
    /// `kernel.signaturePolicy`; without a policy (or a check) the signer is compared with
    /// the kernel's own modules' signer instead.
    public mutating func load(_ module: LoaderFacts, signature: SignatureVerification? = nil) -> LoadResult {
        let name = module.name
        var messages: [String] = []
        var signatureNotes: [Diagnostic] = []
        let finding = signature.map(SignatureFinding.init)
        func fail(_ errno: Int32) -> LoadResult {
            var result = LoadResult(module: name, path: module.path, loads: false, errno: errno, messages: messages, notes: signatureNotes)
            result.signature = finding
            return result
        }

        // A file handed over compressed is unpacked first (finit_module with
        // MODULE_INIT_COMPRESSED_FILE), by the kernel's own decoder.
        if kernel.compressedHandoff.kernelUnpacks(module.compression, kernelDecompresses: kernel.kernelDecompression),
           let refusal = module.kernelDecompressionRefusal {
            messages.append("decompression failed with status \(refusal.status)")
            signatureNotes.append(.note("\(name): \(refusal.reason)", remedy: refusal.remedy))
            return fail(22)
        }

        // Signature: checked first (module_sig_check, before the ELF is even looked at).
        let signatureOK: Bool
        if let policy = kernel.signaturePolicy, let signature, kernel.moduleSignatures {
            let outcome = policy.check(signature, module: name, signer: module.signer, path: module.path)
            signatureNotes = outcome.notes
            if outcome.errno != 0 {
                messages += outcome.messages
                return fail(outcome.errno)
            }
            signatureOK = !outcome.taints
        } else {
            // Enforced only with MODULE_SIG_FORCE.
            signatureOK = !kernel.moduleSignatures || (module.signer != nil && module.signer == kernel.signer)
            if !signatureOK && kernel.signatureEnforced {
                let reason = module.signer == nil ? "unsigned module" : "module with unavailable key"
                messages.append("Loading of \(reason) is rejected")
                return fail(129)
            }
        }

        // ELF validity: from 6.4 the kernel compares its struct module size first.
        if kernel.atLeast(6, 4), let expected = kernel.structModuleSize, let actual = module.thisModuleSize, expected != actual {
            messages.append("module \(name): .gnu.linkonce.this_module section size must match the kernel's built struct module size at run time")
            return fail(8)
        }

        // module_layout: the CRC of the kernel's module ABI, before vermagic.
        if kernel.modversions {
            let recorded = module.versions?.first { $0.name == "module_layout" }?.crc
            let layoutCRC = kernel.exports["module_layout"].flatMap { kernel.checkedCRC($0) }
            if !checkVersion(module, symbol: "module_layout", recorded: recorded, exportCRC: layoutCRC, messages: &messages) {
                return fail(8)
            }
        }

        // vermagic; with modversions only the part after the release is compared.
        if let moduleMagic = module.vermagic, let kernelMagic = kernel.vermagic {
            if !Self.sameMagic(moduleMagic, kernelMagic, hasVersions: kernel.modversions && module.versions != nil) {
                messages.append("\(name): version magic '\(moduleMagic)' should be '\(kernelMagic)'")
                return fail(8)
            }
        } else if module.vermagic == nil {
            if !forceLoad(name, reason: "bad vermagic", messages: &messages) { return fail(8) }
        }

        // 6.1 taints in check_modinfo, before the duplicate check; later kernels after it.
        let taintsBeforeDuplicateCheck = !kernel.atLeast(6, 4)
        let proprietary = !Self.isGPLCompatible(module.license ?? "unspecified")
        if taintsBeforeDuplicateCheck { taintMessages(module, proprietary: proprietary, into: &messages) }
        if loaded[name] != nil {
            return fail(17)
        }
        if taintsBeforeDuplicateCheck {
            if !signatureOK { signatureTaint(name, into: &messages) }
        } else {
            let wasProprietary = taintedProprietary
            taintMessages(module, proprietary: proprietary, into: &messages)
            if !signatureOK { signatureTaint(name, into: &messages) }
            // Since the taint logic moved to module_augment_kernel_taints, a new
            // proprietary taint is announced once more at its end (seen on 6.12).
            if !wasProprietary && taintedProprietary { messages.append("\(name): module license taints kernel.") }
        }

        // Symbols, in symbol-table order; every failure is logged, the last errno wins.
        var modulePropietary = proprietary
        var usingGPLOnly = false
        var lastError: Int32 = 0
        var namespaceNotes: [Diagnostic] = []
        for undefined in module.undefinedSymbols {
            let symbol = undefined.symbol
            var error: Int32 = 0
            if let visible = available(symbol), !(visible.export.isGPLOnly && modulePropietary) {
                let export = visible.export
                if export.isGPLOnly { usingGPLOnly = true }
                if export.module != "vmlinux", loaded[export.module]?.proprietary == true {
                    if usingGPLOnly {
                        messages.append("\(name): module using GPL-only symbols uses symbols \(symbol) from proprietary module \(export.module).")
                        error = 2
                    } else if !modulePropietary {
                        messages.append("\(name): module uses symbols \(symbol) from proprietary module \(export.module), inheriting taint.")
                        modulePropietary = true
                    }
                }
                if error == 0, !checkVersion(module, symbol: symbol, recorded: undefined.versionCRC, exportCRC: visible.crc, messages: &messages) {
                    error = 22
                }
                if error == 0, let namespace = export.namespace, !namespace.isEmpty,
                    !module.importedNamespaces.contains(namespace)
                {
                    // Seen under qemu on 6.1 and 6.12: no message of its own, only the
                    // "Unknown symbol ... (err -22)" that follows.
                    namespaceNotes.append(.note("\(symbol) is in namespace \(namespace), which \(name) does not import",
                                                file: module.path, remedy: "add MODULE_IMPORT_NS(\(namespace)) to \(name)"))
                    if !kernel.allowMissingNamespaceImports { error = 22 }
                }
            } else if !undefined.weak {
                error = 2
            }
            if error != 0 {
                messages.append("\(name): Unknown symbol \(symbol) (err -\(error))")
                lastError = error
            }
        }
        if lastError != 0 {
            var result = fail(lastError)
            result.notes += namespaceNotes
            return result
        }

        // Exports must not clash with what is already there.
        for export in module.exports {
            if let existing = available(export.symbol) {
                messages.append("\(name): exports duplicate symbol \(export.symbol) (owned by \(existing.export.module == "vmlinux" ? "kernel" : existing.export.module))")
                return fail(8)
            }
        }

        loaded[name] = Loaded(proprietary: modulePropietary)
        loadedExports(of: module)
        var result = LoadResult(module: name, path: module.path, loads: true, errno: 0, messages: messages, notes: signatureNotes)
        result.signature = finding
        return result
    }

    /// What a module being loaded can link against: vmlinux's exports, then those of
    /// each module once it is live. No entry is ever replaced by another owner's: a
    /// module exporting a symbol that is already available fails to load.
    private var visibleExports: [String: Visible]

    /// An export with the CRC the kernel checks users against (nil: none to check).
    struct Visible {
        var export: SymbolExport
        var crc: UInt32?
    }

    private func available(_ symbol: String) -> Visible? {
        visibleExports[symbol]
    }

    /// Exports become visible once their module is live; Module.symvers facts
    /// (GPL-only, namespace, CRC) win over what the file alone can tell.
    private mutating func loadedExports(of module: LoaderFacts) {
        for symbol in module.exports {
            if let known = kernel.exports[symbol.symbol], known.module == module.name {
                visibleExports[symbol.symbol] = Visible(export: known, crc: kernel.checkedCRC(known))
            } else {
                // The file alone: no GPL-only or namespace facts; CRC 0 means it has none.
                visibleExports[symbol.symbol] = Visible(
                    export: SymbolExport(symbol: symbol.symbol, module: module.name, crc: symbol.crc),
                    crc: kernel.modversions && symbol.crc != 0 ? symbol.crc : nil)
            }
        }
    }

    /// The kernel's check_version: true when the symbol may be used. `recorded` is the
    /// CRC of the module's first `__versions` entry for the symbol.
    private mutating func checkVersion(
        _ module: LoaderFacts, symbol: String, recorded: UInt64?, exportCRC: UInt32?, messages: inout [String]
    ) -> Bool {
        guard let exportCRC else { return true }
        guard module.versions != nil else {
            return forceLoad(module.name, reason: "no versions for imported symbols", messages: &messages)
        }
        if let crc = recorded {
            // check_version compares the module's unsigned long with the kernel's u32.
            if crc == UInt64(exportCRC) { return true }
            messages.append("\(module.name): disagrees about version of symbol \(symbol)")
            return false
        }
        if !warnedMissingVersion {
            warnedMissingVersion = true
            messages.append("\(module.name): no symbol version for \(symbol)")
        }
        return true
    }

    private mutating func forceLoad(_ name: String, reason: String, messages: inout [String]) -> Bool {
        guard kernel.forceLoad else { return false }
        if !taintedForced { messages.append("\(name): \(reason): kernel tainted.") }
        taintedForced = true
        lockdepUnreliable(&messages)
        return true
    }

    private mutating func taintMessages(_ module: LoaderFacts, proprietary: Bool, into messages: inout [String]) {
        if !module.intree {
            if !taintedOutOfTree { messages.append("\(module.name): loading out-of-tree module taints kernel.") }
            taintedOutOfTree = true
        }
        if proprietary {
            if !taintedProprietary { messages.append("\(module.name): module license '\(module.license ?? "unspecified")' taints kernel.") }
            taintedProprietary = true
            lockdepUnreliable(&messages)
        }
    }

    private mutating func signatureTaint(_ name: String, into messages: inout [String]) {
        if !taintedUnsigned {
            messages.append("\(name): module verification failed: signature and/or required key missing - tainting kernel")
        }
        taintedUnsigned = true
    }

    private mutating func lockdepUnreliable(_ messages: inout [String]) {
        if debugLocksOn { messages.append("Disabling lock debugging due to kernel taint") }
        debugLocksOn = false
    }

    /// The kernel's same_magic: with versions, the release part (up to the first space) may differ.
    static func sameMagic(_ module: String, _ kernel: String, hasVersions: Bool) -> Bool {
        guard hasVersions else { return module == kernel }
        func tail(_ s: String) -> Substring { s.firstIndex(of: " ").map { s[$0...] } ?? Substring(s) }
        return tail(module) == tail(kernel)
    }

    static func isGPLCompatible(_ license: String) -> Bool {
        ["GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL"].contains(license)
    }
}

/// JSON: `diagnostics` holds the typed notes; `notes` keeps the schema-1 strings for
/// readers written before them (docs/inspect-json-schema.md), as LoadPlan does.
extension LoadResult: Codable {
    enum CodingKeys: String, CodingKey { case module, path, loads, errno, messages, notes, diagnostics, signature }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        module = try container.decode(String.self, forKey: .module)
        path = try container.decode(String.self, forKey: .path)
        loads = try container.decode(Bool.self, forKey: .loads)
        errno = try container.decode(Int32.self, forKey: .errno)
        messages = try container.decode([String].self, forKey: .messages)
        notes = try container.decodeIfPresent([Diagnostic].self, forKey: .diagnostics)
            ?? (try container.decodeIfPresent([String].self, forKey: .notes) ?? []).map { .note($0) }
        signature = try container.decodeIfPresent(SignatureFinding.self, forKey: .signature)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(module, forKey: .module)
        try container.encode(path, forKey: .path)
        try container.encode(loads, forKey: .loads)
        try container.encode(errno, forKey: .errno)
        try container.encode(messages, forKey: .messages)
        try container.encode(notes.map(\.message), forKey: .notes)
        try container.encode(notes, forKey: .diagnostics)
        try container.encodeIfPresent(signature, forKey: .signature)
    }
}
