import Foundation
import KernelTree
import NVBuildSupport

/// The checks the driver's Kbuild runs before any conftest header: same
/// outcomes, same IGNORE_* / VGX_* switches as conftest.sh.
public enum SanityCheck: String, Sendable, CaseIterable, Codable {
    case ccSanity = "cc_sanity_check"
    case ccVersion = "cc_version_check"
    case dom0 = "dom0_sanity_check"
    case xen = "xen_sanity_check"
    case preemptRT = "preempt_rt_sanity_check"
    case vgpuKVM = "vgpu_kvm_sanity_check"
    case moduleSymvers = "module_symvers_sanity_check"
}

public struct SanityResult: Sendable, Equatable, Codable {
    public var check: SanityCheck
    /// nil when the check passed or was skipped.
    public var failure: String?
    /// A warning that does not stop the probe (cc_version_check never fails).
    public var warning: Diagnostic?
    public var skipped: Bool
}

public struct SanityChecker: Sendable {
    public var kernel: KernelTarget
    public var compiler: CompilerCommand
    public var environment: [String: String]
    public var runner: ProcessRunner
    public var scratch: String
    /// Caches the two compiles (by compiler identity and source): a warm probe runs none.
    public var cache: ResultCache?
    public var compilerIdentity: String
    /// Each compile holds one of these (the budget shared with make), when set.
    public var slots: JobSlots?

    public init(kernel: KernelTarget, compiler: CompilerCommand, environment: [String: String], scratch: String,
                runner: ProcessRunner = ProcessRunner(), cache: ResultCache? = nil, compilerIdentity: String = "") {
        self.kernel = kernel
        self.compiler = compiler
        self.environment = environment
        self.scratch = scratch
        self.runner = runner
        self.cache = cache
        self.compilerIdentity = compilerIdentity
    }

    private func set(_ name: String) -> Bool { Self.isSet(name, in: environment) }
    /// The Kbuild's switches count as set when non-empty.
    private static func isSet(_ name: String, in environment: [String: String]) -> Bool { !(environment[name] ?? "").isEmpty }

    /// The PREEMPT_RT check decided from the configuration alone, without a compile: why
    /// the tree refuses this kernel, or nil. `build --kernel all` asks it to skip such kernels.
    public static func preemptRTRefusal(config: KernelConfig, environment: [String: String]) -> String? {
        guard !isSet("IGNORE_PREEMPT_RT_PRESENCE", in: environment),
              config.isEnabled("PREEMPT_RT") || config.isEnabled("PREEMPT_RT_FULL") else { return nil }
        return "the target kernel has the PREEMPT_RT patch set (CONFIG_PREEMPT_RT), which the driver does not support; set IGNORE_PREEMPT_RT_PRESENCE=1 to build anyway"
    }

    public func runAll(config: KernelConfig) async throws -> [SanityResult] {
        var results: [SanityResult] = []
        for check in SanityCheck.allCases { results.append(try await run(check, config: config)) }
        return results
    }

    public func run(_ check: SanityCheck, config: KernelConfig) async throws -> SanityResult {
        func pass(skipped: Bool = false) -> SanityResult { SanityResult(check: check, failure: nil, warning: nil, skipped: skipped) }
        func fail(_ why: String) -> SanityResult { SanityResult(check: check, failure: why, warning: nil, skipped: false) }
        switch check {
        case .ccSanity:
            let ok = try await compiles("int nvbuild_cc_sanity(void) { return 0; }\n", extraFlags: [], name: "cc-sanity")
            return ok ? pass() : fail("the compiler '\(compiler)' cannot compile a trivial C file; install it (apt-get install gcc-12) or pass --cc")
        case .ccVersion:
            if set("IGNORE_CC_MISMATCH") { return pass(skipped: true) }
            let compileH = kernel.outputDirectory + "/include/generated/compile.h"
            guard let text = try? String(contentsOfFile: compileH, encoding: .utf8),
                let line = text.split(separator: "\n").first(where: { $0.contains("LINUX_COMPILER") }),
                let version = Self.firstVersion(in: String(line))
            else { return pass(skipped: true) }
            let code = "#if (__GNUC__ != \(version.major)) || (__GNUC_MINOR__ != \(version.minor))\n#error mismatch\n#endif\n"
            let ok = try await compiles(code, extraFlags: [], name: "cc-version")
            if ok { return pass() }
            return SanityResult(check: check, failure: nil,
                warning: .warning("\(check.rawValue): the kernel was built with compiler version \(version.major).\(version.minor) but '\(compiler)' is a different version",
                                  file: compileH, remedy: "set IGNORE_CC_MISMATCH=1 to silence this"),
                skipped: false)
        case .dom0:
            guard set("VGX_BUILD") else { return pass(skipped: true) }
            // conftest.sh compares /proc/xen/capabilities with "==" inside [ ], which dash
            // rejects: under Debian's /bin/sh this path always fails, whatever the file says.
            return fail("VGX_BUILD is set, but the dom0 check fails: the kernel is not running in DOM0 (/proc/xen/capabilities)")
        case .xen:
            if set("IGNORE_XEN_PRESENCE") || set("VGX_BUILD") { return pass(skipped: true) }
            if config.isEnabled("XEN") && !config.isEnabled("PARAVIRT") {
                return fail("the target kernel is a Xen kernel (CONFIG_XEN without CONFIG_PARAVIRT), which the driver does not support; set IGNORE_XEN_PRESENCE=1 to build anyway")
            }
            return pass()
        case .preemptRT:
            if set("IGNORE_PREEMPT_RT_PRESENCE") { return pass(skipped: true) }
            return Self.preemptRTRefusal(config: config, environment: environment).map(fail) ?? pass()
        case .vgpuKVM:
            guard set("VGX_KVM_BUILD") else { return pass(skipped: true) }
            func on(_ o: String) -> Bool { config.isEnabled(o, includingModule: true) }
            var missing: [String] = []
            if !(on("VFIO_IOMMU_TYPE1") || on("IOMMUFD_VFIO_CONTAINER")) { missing.append("CONFIG_VFIO_IOMMU_TYPE1 or CONFIG_IOMMUFD_VFIO_CONTAINER") }
            if !on("KVM_VFIO") { missing.append("CONFIG_KVM") }
            if !(on("VFIO_MDEV") || on("VFIO_PCI_CORE")) { missing.append("CONFIG_VFIO_MDEV or CONFIG_VFIO_PCI_CORE") }
            return missing.isEmpty ? pass() : fail("VGX_KVM_BUILD is set, but the kernel lacks \(missing.joined(separator: ", "))")
        case .moduleSymvers:
            if set("IGNORE_MISSING_MODULE_SYMVERS") { return pass(skipped: true) }
            let path = kernel.moduleSymversPath
            guard let hasVmlinux = ModuleSymvers.hasVmlinuxExports(at: path) else {
                return fail("\(path) is missing; the kernel build tree is incomplete (reinstall its headers package) or set IGNORE_MISSING_MODULE_SYMVERS=1")
            }
            return hasVmlinux ? pass()
                : fail("\(path) lists no vmlinux exports; the kernel build tree is incomplete (reinstall its headers package) or set IGNORE_MISSING_MODULE_SYMVERS=1")
        }
    }

    static func firstVersion(in text: String) -> (major: Int, minor: Int)? {
        var digits = ""
        for ch in text {
            if ch.isNumber || ch == "." { digits.append(ch) } else {
                let parts = digits.split(separator: ".")
                if parts.count >= 2, let a = Int(parts[0]), let b = Int(parts[1]) { return (a, b) }
                digits = ""
            }
        }
        let parts = digits.split(separator: ".")
        if parts.count >= 2, let a = Int(parts[0]), let b = Int(parts[1]) { return (a, b) }
        return nil
    }

    private func compiles(_ code: String, extraFlags: [String], name: String) async throws -> Bool {
        let key = (["sanity", compilerIdentity, code] + extraFlags).joined(separator: "\u{0}")
        if let cache, let hit = cache.lookup(step: key) { return hit.ok }
        let ok = try await compilesUncached(code, extraFlags: extraFlags, name: name)
        cache?.store(step: key, ok: ok, output: "", dependencies: [])
        return ok
    }

    private func compilesUncached(_ code: String, extraFlags: [String], name: String) async throws -> Bool {
        let dir = "\(scratch)/\(name)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data(code.utf8).write(to: URL(fileURLWithPath: dir + "/check.c"))
        let command = compiler.argv + extraFlags + ["-c", "check.c", "-o", "check.o"]
        let runner = runner
        @Sendable func check() async throws -> ProcessOutput { try await runner.run(command, workingDirectory: dir) }
        let out: ProcessOutput
        if let slots { out = try await slots.run(check) } else { out = try await check() }
        return out.succeeded && FileManager.default.fileExists(atPath: dir + "/check.o")
    }
}
