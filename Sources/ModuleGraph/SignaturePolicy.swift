import Foundation
import KernelTree
import ModuleELF
import NVBuildSupport

/// How the target kernel will treat module signatures on the boot being predicted: whether
/// it enforces them (`module.sig_enforce=1`, `CONFIG_MODULE_SIG_FORCE`), whether it is locked
/// down (`lockdown=`, or UEFI Secure Boot on a kernel built with
/// `CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT`), and which certificates it trusts.
///
/// The verdicts follow `module_sig_check` (kernel/module/signing.c, the same in 6.1 and
/// 6.12): `mod_verify_sig` → 0 loads; ENODATA (unsigned), ENOPKG (unsupported crypto) and
/// ENOKEY (no trusted key) are forgiven unless enforced (EKEYREJECTED, "Loading of … is
/// rejected") or locked down (EPERM, "Lockdown: …"); every other error (EKEYREJECTED for a
/// signature that does not verify with a trusted key, EBADMSG) refuses the module even when
/// nothing is enforced.
public struct SignaturePolicy: Sendable {
    public enum Lockdown: String, Sendable, Codable, Comparable {
        case none, integrity, confidentiality

        public static func < (a: Self, b: Self) -> Bool { a.rank < b.rank }
        private var rank: Int { self == .none ? 0 : self == .integrity ? 1 : 2 }
    }

    /// `is_module_sig_enforced()`.
    public var enforced: Bool
    public var lockdown: Lockdown
    /// The keys the kernel verifies module signatures with.
    public var trusted: [SigningCertificate]
    /// Sources (as in `SigningCertificate.source`) of certificates the kernel trusts only when
    /// they are enrolled as Machine Owner Keys, which only the firmware knows.
    public var needsEnrollment: Set<String> = []
    /// The process name the lockdown message names (`current->comm` of the loader).
    public var loaderCommand = "modprobe"
    /// What set enforcement and lockdown, for the report ("module.sig_enforce=1 on the command line").
    public var reasons: [String] = []

    public init(enforced: Bool, lockdown: Lockdown, trusted: [SigningCertificate]) {
        self.enforced = enforced
        self.lockdown = lockdown
        self.trusted = trusted
    }

    /// Where Secure Boot shim and DKMS keep the Machine Owner Key they sign with: trusted by a
    /// kernel only once enrolled with `mokutil --import`.
    public static let machineOwnerKeyLocations = ["/var/lib/shim-signed/mok", "/var/lib/dkms/mok.pub"]

    /// What the kernel command line says: `module.sig_enforce` (a bool_enable_only parameter:
    /// 1/y/Y/on or no value sets it) and `lockdown=integrity|confidentiality`.
    public struct CommandLine: Sendable, Equatable {
        public var sigEnforce = false
        public var lockdown: Lockdown = .none

        public init(_ text: String) {
            for word in text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }) {
                let parts = word.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                // The kernel treats - and _ in parameter names alike.
                let name = parts[0].replacingOccurrences(of: "-", with: "_")
                let value = parts.count > 1 ? String(parts[1]) : nil
                switch name {
                case "module.sig_enforce":
                    if let value { sigEnforce = ["1", "y", "Y", "on"].contains(value) || sigEnforce } else { sigEnforce = true }
                case "lockdown":
                    if let value, let level = Lockdown(rawValue: value), level != .none { lockdown = max(lockdown, level) }
                default:
                    break
                }
            }
        }
    }

    /// The policy of `target` booted as described, or nil when nothing about it calls for
    /// checking signatures cryptographically (no Secure Boot, nothing enforced, no `trust`):
    /// then the loader simulation keeps its signer comparison ("loads, taints").
    ///
    /// Trusted: the certificates built into `/boot/vmlinuz-<release>`, the `trust` files, and
    /// unless `machineOwnerKeys` is false the MOK certificates of shim-signed and DKMS that
    /// exist here (reported as trusted only if enrolled).
    public static func make(
        target: KernelTarget, secureBoot: Bool, commandLine: String?, trust: [String], machineOwnerKeys: Bool = true,
        bootDirectory: String = "/boot"
    ) throws(UserError) -> SignaturePolicy? {
        let config = target.config
        let line = CommandLine(commandLine ?? "")
        var reasons: [String] = []
        var enforced = false
        if config.isEnabled("MODULE_SIG_FORCE") {
            enforced = true
            reasons.append("CONFIG_MODULE_SIG_FORCE=y")
        }
        if line.sigEnforce {
            enforced = true
            reasons.append("module.sig_enforce=1 on the command line")
        }
        var lockdown: Lockdown = .none
        let lockdownBuilt = config.isEnabled("SECURITY_LOCKDOWN_LSM")
        if lockdownBuilt {
            if config.isEnabled("LOCK_DOWN_KERNEL_FORCE_CONFIDENTIALITY") {
                lockdown = .confidentiality
                reasons.append("CONFIG_LOCK_DOWN_KERNEL_FORCE_CONFIDENTIALITY=y")
            } else if config.isEnabled("LOCK_DOWN_KERNEL_FORCE_INTEGRITY") {
                lockdown = .integrity
                reasons.append("CONFIG_LOCK_DOWN_KERNEL_FORCE_INTEGRITY=y")
            }
            if line.lockdown > lockdown {
                lockdown = line.lockdown
                reasons.append("lockdown=\(line.lockdown.rawValue) on the command line")
            }
            if secureBoot, config.isEnabled("LOCK_DOWN_IN_EFI_SECURE_BOOT"), lockdown < .integrity {
                lockdown = .integrity
                reasons.append("UEFI Secure Boot locks the kernel down (CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT=y)")
            }
        }
        if secureBoot, lockdown == .none, !enforced {
            reasons.append("UEFI Secure Boot alone enforces nothing on this kernel (no CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT, no CONFIG_MODULE_SIG_FORCE)")
        }
        guard secureBoot || enforced || lockdown != .none || !trust.isEmpty else { return nil }

        let image = "\(bootDirectory)/vmlinuz-\(target.release)"
        guard FileManager.default.isReadableFile(atPath: image) else {
            throw UserError(.environment, "\(image) is missing or unreadable: the kernel's built-in trusted certificates are read from it; install linux-image-\(target.release)")
        }
        var trusted: [SigningCertificate]
        do { trusted = try SigningCertificate.load(path: image) } catch {
            // A kernel image without a certificate list trusts no built-in key.
            guard error.message.contains("no built-in certificate list") else { throw error }
            trusted = []
        }
        for path in trust { trusted += try SigningCertificate.load(path: path) }
        var needsEnrollment: Set<String> = []
        if machineOwnerKeys {
            for file in Self.machineOwnerKeyFiles() {
                // A file that is not a certificate (a key, a note) is not a MOK.
                guard let found = try? SigningCertificate.load(path: file) else { continue }
                for certificate in found where !trusted.contains(where: { $0.certificate == certificate.certificate }) {
                    trusted.append(certificate)
                    needsEnrollment.insert(certificate.source)
                }
            }
        }
        var policy = SignaturePolicy(enforced: enforced, lockdown: lockdown, trusted: trusted)
        policy.needsEnrollment = needsEnrollment
        policy.reasons = reasons
        return policy
    }

    /// The MOK certificate files present here: `*.der`, `*.pem`, `*.crt`, `*.pub` in shim-signed's
    /// directory, and DKMS's certificate.
    static func machineOwnerKeyFiles() -> [String] {
        var files: [String] = []
        for location in machineOwnerKeyLocations {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: location, isDirectory: &isDirectory) else { continue }
            if !isDirectory.boolValue {
                files.append(location)
                continue
            }
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: location)) ?? []).sorted()
            for name in names where [".der", ".pem", ".crt", ".pub"].contains(where: { name.hasSuffix($0) }) {
                files.append(location + "/" + name)
            }
        }
        return files
    }

    /// The kernel's verdict on one module's signature, before any other check of the loader.
    public struct Outcome: Sendable, Equatable {
        /// 0: the loader goes on; the module taints when `taints`.
        public var errno: Int32
        public var messages: [String]
        public var taints: Bool
        public var notes: [Diagnostic]
    }

    /// `module_sig_check` for a module whose signature checked as `signature` against
    /// `trusted`. `name` is the module's name, for the remedies.
    public func check(_ signature: SignatureVerification, module name: String, signer signerName: String?, path: String) -> Outcome {
        let error = signature.kernelErrno
        var notes: [Diagnostic] = []
        let signer = Self.signerDescription(signature, signerName: signerName)
        switch error {
        case 0:
            if let source = signature.certificateSource, needsEnrollment.contains(source) {
                notes.append(.note(
                    "signed by \(signature.certificateSubject ?? "?"), whose certificate \(source) the kernel trusts only once it is enrolled as a Machine Owner Key",
                    file: path, remedy: "check with `mokutil --test-key \(Self.fileOf(source))`; enroll it with `mokutil --import \(Self.fileOf(source))` and confirm in MokManager at the next boot"))
            }
            return Outcome(errno: 0, messages: [], taints: false, notes: notes)
        case 61, 65, 126:
            let reason: String
            switch error {
            case 61:
                reason = "unsigned module"
                notes.append(.note(
                    signature.placement == .compressedThenSigned
                        ? "\(name) is signed outside its compressed stream: the kernel checks the decompressed module and finds no signature"
                        : "\(name) is not signed",
                    file: path, remedy: "sign it with a key the kernel trusts (nvbuild build --sign-key KEY --sign-cert CERT) and enroll that certificate with `mokutil --import CERT`"))
            case 65:
                reason = "module with unsupported crypto"
                notes.append(.note("\(name): the kernel cannot check its signature (\(signature.reason ?? "unsupported algorithm"))",
                                   file: path, remedy: "sign it with the kernel's CONFIG_MODULE_SIG_HASH and an RSA or ECDSA key"))
            default:
                reason = "module with unavailable key"
                notes.append(.note(
                    "\(name) is signed by \(signer), which the kernel does not trust",
                    file: path, remedy: "enroll the signing certificate with `mokutil --import CERT` (and confirm in MokManager at the next boot), or sign the module with an enrolled key"))
            }
            if enforced {
                return Outcome(errno: 129, messages: ["Loading of \(reason) is rejected"], taints: false, notes: notes)
            }
            if lockdown != .none {
                return Outcome(
                    errno: 1, messages: ["Lockdown: \(loaderCommand): unsigned module loading is restricted; see man kernel_lockdown.7"],
                    taints: false, notes: notes)
            }
            return Outcome(errno: 0, messages: [], taints: true, notes: notes)
        default:
            // Fatal whatever is enforced.
            if error == 129 {
                notes.append(.note(
                    "\(name): the signature does not verify although its key is trusted: \(signature.reason ?? "the module changed after signing")",
                    file: path, remedy: "rebuild and re-sign the module; do not change it after signing (strip, objcopy) and sign before compressing"))
            } else {
                notes.append(.note("\(name): malformed signature: \(signature.reason ?? "the kernel cannot parse it")",
                                   file: path, remedy: "strip it and sign again with the kernel's scripts/sign-file"))
            }
            return Outcome(errno: error, messages: [], taints: false, notes: notes)
        }
    }

    static func signerDescription(_ signature: SignatureVerification, signerName: String?) -> String {
        let key = signature.keyDescription.map { "key \($0)" } ?? "an unnamed key"
        guard let signerName, !signerName.isEmpty else { return key }
        return "\"\(signerName)\" (\(key))"
    }

    /// `file` of a source written `file#2` or `file (built-in #1)`.
    static func fileOf(_ source: String) -> String {
        var file = source
        if let hash = file.lastIndex(of: "#"), !file.contains(" (built-in") { file = String(file[..<hash]) }
        return file
    }
}

/// The signature facts a verify report carries per module when signatures are checked.
public struct SignatureFinding: Sendable, Equatable, Codable {
    /// valid, unknownKey, invalid, unsigned, unsupported
    public var verdict: SignatureVerification.Verdict
    /// The errno of the kernel's `mod_verify_sig` (0, ENODATA, ENOKEY, EKEYREJECTED, …).
    public var kernelCheck: String
    /// The key the signature names.
    public var key: String?
    /// For a valid signature: the trusted certificate that verified it, and where it came from.
    public var certificate: String?
    public var certificateSource: String?

    public init(_ verification: SignatureVerification) {
        verdict = verification.verdict
        kernelCheck = Errno.name(verification.kernelErrno)
        key = verification.keyDescription
        certificate = verification.certificateSubject
        certificateSource = verification.certificateSource
    }
}

extension SignaturePolicy {
    /// The policy as a report shows it.
    public struct Summary: Sendable, Equatable, Codable {
        public struct Trusted: Sendable, Equatable, Codable {
            public var subject: String
            public var source: String
            /// Trusted only once enrolled as a Machine Owner Key.
            public var needsEnrollment: Bool
        }
        public var enforced: Bool
        public var lockdown: Lockdown
        public var reasons: [String]
        public var trusted: [Trusted]
    }

    public var summary: Summary {
        Summary(
            enforced: enforced, lockdown: lockdown, reasons: reasons,
            trusted: trusted.map { .init(subject: $0.subject, source: $0.source, needsEnrollment: needsEnrollment.contains($0.source)) })
    }
}
