import Foundation
import KernelTree
import ModuleELF
import NVBuildSupport
import TestSupport
import Testing

@testable import ModuleGraph

/// How a boot's signature policy is decided from the kernel's config, its command line and
/// the options, and module_sig_check's table of verdicts.
@Suite struct SignaturePolicyTests {
    @Test func commandLineWords() {
        typealias Line = SignaturePolicy.CommandLine
        #expect(Line("quiet module.sig_enforce=1").sigEnforce)
        #expect(Line("module.sig_enforce").sigEnforce)
        #expect(Line("module.sig-enforce=y").sigEnforce)
        #expect(!Line("module.sig_enforce=0").sigEnforce)
        #expect(!Line("sig_enforce=1 modules.sig_enforce=1").sigEnforce)
        // bool_enable_only: once set it stays set.
        #expect(Line("module.sig_enforce=1 module.sig_enforce=0").sigEnforce)
        #expect(Line("lockdown=integrity").lockdown == .integrity)
        #expect(Line("lockdown=confidentiality lockdown=integrity").lockdown == .confidentiality)
        #expect(Line("lockdown=bogus").lockdown == .none)
    }

    @Test(arguments: InstalledKernels.standard)
    func policyFromConfigAndOptions(release: String) throws {
        try InstalledKernels.requireImage(release)
        let target = try KernelDiscovery().kernel(release: release)
        // Nothing asked, nothing forced by the config: the simulation keeps its signer comparison.
        if !target.config.isEnabled("MODULE_SIG_FORCE") {
            #expect(try SignaturePolicy.make(target: target, secureBoot: false, commandLine: nil, trust: [], machineOwnerKeys: false) == nil)
        }
        let secure = try #require(try SignaturePolicy.make(target: target, secureBoot: true, commandLine: nil, trust: [], machineOwnerKeys: false))
        let locksDown = target.config.isEnabled("LOCK_DOWN_IN_EFI_SECURE_BOOT") && target.config.isEnabled("SECURITY_LOCKDOWN_LSM")
        #expect(secure.lockdown == (locksDown ? .integrity : .none))
        #expect(secure.enforced == target.config.isEnabled("MODULE_SIG_FORCE"))
        // The image's built-in list: the key its own modules are signed with.
        #expect(!secure.trusted.isEmpty && secure.trusted.allSatisfy { $0.source.contains("/boot/vmlinuz-\(release) (built-in") })
        let enforced = try #require(try SignaturePolicy.make(
            target: target, secureBoot: false, commandLine: "ro module.sig_enforce=1", trust: [], machineOwnerKeys: false))
        #expect(enforced.enforced && enforced.reasons.contains("module.sig_enforce=1 on the command line"))

        // A missing image is one line naming it and the package.
        do {
            _ = try SignaturePolicy.make(target: target, secureBoot: true, commandLine: nil, trust: [], bootDirectory: "/nonexistent")
            Issue.record("no image, yet a policy")
        } catch {
            #expect(error.message.hasPrefix("/nonexistent/vmlinuz-\(release) is missing") && error.message.contains("linux-image-\(release)"))
        }
    }

    /// module_sig_check: which errno and message for each mod_verify_sig result.
    @Test func verdictTable() {
        func verification(_ verdict: SignatureVerification.Verdict, invalidErrno: Int32? = nil) -> SignatureVerification {
            var result = SignatureVerification(verdict: verdict)
            result.placement = verdict == .unsigned ? nil : .uncompressed
            result.invalidErrno = invalidErrno
            return result
        }
        let plain = SignaturePolicy(enforced: false, lockdown: .none, trusted: [])
        let enforced = SignaturePolicy(enforced: true, lockdown: .none, trusted: [])
        let locked = SignaturePolicy(enforced: false, lockdown: .integrity, trusted: [])
        let both = SignaturePolicy(enforced: true, lockdown: .integrity, trusted: [])
        let lockdown = "Lockdown: modprobe: unsigned module loading is restricted; see man kernel_lockdown.7"
        let cases: [(SignatureVerification, SignaturePolicy, Int32, [String], Bool)] = [
            (verification(.valid), both, 0, [], false),
            (verification(.unsigned), plain, 0, [], true),
            (verification(.unsigned), enforced, 129, ["Loading of unsigned module is rejected"], false),
            (verification(.unsigned), locked, 1, [lockdown], false),
            (verification(.unsigned), both, 129, ["Loading of unsigned module is rejected"], false),
            (verification(.unknownKey), plain, 0, [], true),
            (verification(.unknownKey), enforced, 129, ["Loading of module with unavailable key is rejected"], false),
            (verification(.unknownKey), locked, 1, [lockdown], false),
            (verification(.unsupported), enforced, 129, ["Loading of module with unsupported crypto is rejected"], false),
            (verification(.invalid), plain, 129, [], false),
            (verification(.invalid, invalidErrno: 74), plain, 74, [], false),
            (verification(.invalid, invalidErrno: 65), locked, 1, [lockdown], false),
        ]
        for (signature, policy, errno, messages, taints) in cases {
            let outcome = policy.check(signature, module: "m", signer: "s", path: "/m.ko")
            #expect(outcome.errno == errno && outcome.messages == messages && outcome.taints == taints,
                    "\(signature.verdict) enforced \(policy.enforced) lockdown \(policy.lockdown): \(outcome)")
            #expect(outcome.errno == 0 && !outcome.taints || !outcome.notes.isEmpty, "a refusal or taint without a remedy")
        }
    }
}
