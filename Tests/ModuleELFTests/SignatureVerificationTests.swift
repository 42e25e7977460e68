import Foundation
import ModuleELF
import NVBuildSupport
import SwiftASN1
import TestSupport
import Testing
import X509

/// `SignatureVerifier` on real modules signed by the kernel's own `scripts/sign-file` with
/// keys made here by `openssl req`, and on Debian's signed modules against the certificates
/// built into the installed kernel image. Every verdict is compared with a reference check
/// by `openssl cms -verify` on the same bytes.
@Suite struct SignatureVerificationTests {
    /// The first standard kernel's `scripts/sign-file` (Debian ships it in linux-kbuild).
    static let signFile: String? = InstalledKernels.standard.lazy
        .map { "/lib/modules/\($0)/build/scripts/sign-file" }
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    struct TestKey {
        var key: String
        var certificate: String
    }

    enum KeyKind: String { case rsa, ec }

    static func makeKey(_ name: String, _ kind: KeyKind, in scratch: ScratchDirectory) async throws -> TestKey {
        let key = TestKey(key: "\(scratch.path)/\(name).key", certificate: "\(scratch.path)/\(name).crt")
        let algorithm = kind == .rsa ? ["-newkey", "rsa:2048"] : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        let made = try await ProcessRunner().run(
            ["openssl", "req", "-new", "-x509"] + algorithm
                + ["-nodes", "-subj", "/CN=\(name)", "-days", "2", "-keyout", key.key, "-out", key.certificate])
        try #require(made.succeeded, "openssl req: \(made.standardError)")
        return key
    }

    /// The trailer at the end of `bytes` split off as (content, PKCS#7 message); nil when unsigned.
    static func splitSignature(_ bytes: [UInt8]) -> (content: [UInt8], message: [UInt8])? {
        let magic = Array("~Module signature appended~\n".utf8)
        guard bytes.count > magic.count + 12, bytes.suffix(magic.count).elementsEqual(magic) else { return nil }
        let descriptor = bytes.count - magic.count - 12
        let length = bytes[(descriptor + 8)..<(descriptor + 12)].reduce(0) { $0 << 8 | Int($1) }
        guard length < descriptor else { return nil }
        return (Array(bytes[..<(descriptor - length)]), Array(bytes[(descriptor - length)..<descriptor]))
    }

    /// An unsigned ELF image of a real installed module (the first of the first standard
    /// kernel), decompressed by the real xz/zstd tool when stored compressed.
    static func unsignedModule(in scratch: ScratchDirectory) async throws -> String {
        let kernel = try #require(InstalledKernel.all.first, "no standard kernel installed (scripts/setup)")
        let module = try #require(kernel.modules().first, "kernel \(kernel) has no modules")
        var bytes: [UInt8]
        if module.hasSuffix(".xz") {
            bytes = [UInt8](try await runTool(["xz", "-dc", module]))
        } else if module.hasSuffix(".zst") {
            bytes = [UInt8](try await runTool(["zstd", "-dc", module]))
        } else {
            bytes = [UInt8](try #require(FileManager.default.contents(atPath: module)))
        }
        if let (content, _) = splitSignature(bytes) { bytes = content }
        return scratch.write("unsigned.ko", bytes)
    }

    static func sign(_ module: String, with key: TestKey, as name: String, in scratch: ScratchDirectory) async throws -> String {
        let signFile = try #require(signFile, "no scripts/sign-file in a standard kernel's build tree")
        let signed = "\(scratch.path)/\(name)"
        let result = try await ProcessRunner().run([signFile, "sha256", key.key, key.certificate, module, signed])
        try #require(result.succeeded, "sign-file: \(result.standardError)")
        return signed
    }

    static func changeOneByte(_ module: String, as name: String, in scratch: ScratchDirectory) throws -> String {
        var bytes = [UInt8](try #require(FileManager.default.contents(atPath: module)))
        bytes[bytes.count / 3] ^= 0x01
        return scratch.write(name, bytes)
    }

    /// The reference: `openssl cms -verify` of the module's PKCS#7 message over the bytes
    /// before it, with `certificates` (PEM) as the signer candidates and trust anchors. The
    /// signature checked is the one the kernel checks: inside the compressed stream when
    /// there is one there, else the one appended to the file.
    static func opensslVerdict(_ module: String, certificates: String, in scratch: ScratchDirectory) async throws -> SignatureVerification.Verdict {
        var bytes = [UInt8](try #require(FileManager.default.contents(atPath: module)))
        let decompressor = module.hasSuffix(".xz") ? "xz" : module.hasSuffix(".zst") ? "zstd" : module.hasSuffix(".gz") ? "gzip" : nil
        if let decompressor, splitSignature(bytes) == nil {
            bytes = [UInt8](try await runTool([decompressor, "-dc", module]))
        }
        guard let (content, message) = splitSignature(bytes) else { return .unsigned }
        let name = UUID().uuidString
        let contentFile = scratch.write("\(name).content", content)
        let messageFile = scratch.write("\(name).p7", message)
        let result = try await ProcessRunner().run(
            ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-content", contentFile, "-in", messageFile,
             "-certfile", certificates, "-CAfile", certificates, "-purpose", "any", "-out", "/dev/null"])
        if result.succeeded { return .valid }
        if result.standardError.contains("signer certificate not found") { return .unknownKey }
        return .invalid
    }

    static func verdict(_ module: String, _ certificates: String...) throws -> SignatureVerification {
        var trusted: [SigningCertificate] = []
        for path in certificates { trusted += try SigningCertificate.load(path: path) }
        return try SignatureVerifier.verify(path: module, certificates: trusted)
    }

    @Test func rsaAndECSignaturesBySignFileAgreeWithOpenSSL() async throws {
        let scratch = try ScratchDirectory()
        let unsigned = try await Self.unsignedModule(in: scratch)
        let rsa = try await Self.makeKey("nvbuild-test", .rsa, in: scratch)
        let ec = try await Self.makeKey("nvbuild-test-ec", .ec, in: scratch)
        let other = try await Self.makeKey("nvbuild-other", .rsa, in: scratch)
        let rsaSigned = try await Self.sign(unsigned, with: rsa, as: "rsa.ko", in: scratch)
        let ecSigned = try await Self.sign(unsigned, with: ec, as: "ec.ko", in: scratch)
        let cases: [(module: String, certificate: String, expected: SignatureVerification.Verdict)] = [
            (rsaSigned, rsa.certificate, .valid),
            (ecSigned, ec.certificate, .valid),
            (try Self.changeOneByte(rsaSigned, as: "rsa-changed.ko", in: scratch), rsa.certificate, .invalid),
            (try Self.changeOneByte(ecSigned, as: "ec-changed.ko", in: scratch), ec.certificate, .invalid),
            (rsaSigned, other.certificate, .unknownKey),
            (ecSigned, other.certificate, .unknownKey),
            (unsigned, rsa.certificate, .unsigned),
        ]
        for (module, certificate, expected) in cases {
            let ours = try Self.verdict(module, certificate)
            let reference = try await Self.opensslVerdict(module, certificates: certificate, in: scratch)
            #expect(ours.verdict == expected, "\(module) against \(certificate): \(ours.summary)")
            #expect(ours.verdict == reference, "\(module) against \(certificate): openssl says \(reference), we say \(ours.summary)")
        }
        let valid = try Self.verdict(rsaSigned, other.certificate, rsa.certificate)
        #expect(valid.certificateSubject == "CN=nvbuild-test")
        #expect(valid.certificateSource == rsa.certificate)
        #expect(valid.placement == .uncompressed)
        let unknown = try Self.verdict(rsaSigned, other.certificate)
        let module = try ModuleFile.read(path: rsaSigned, parts: .signature)
        let keyID = try #require(module.signature?.keyID)
        #expect(unknown.keySerial == keyID.map { String(format: "%02x", $0) }.joined())
        #expect(unknown.keyIssuer == "CN=nvbuild-test")
        #expect(unknown.summary.hasPrefix("signed by an unknown key: issuer CN=nvbuild-test, serial "))
    }

    /// sign-file signs without signed attributes; a message with them (openssl cms -sign's
    /// default), attached with `sign-file -s`, is checked through its message digest.
    @Test func signedAttributesAgreeWithOpenSSL() async throws {
        let scratch = try ScratchDirectory()
        let unsigned = try await Self.unsignedModule(in: scratch)
        let rsa = try await Self.makeKey("nvbuild-attrs", .rsa, in: scratch)
        let message = scratch.path + "/attrs.p7"
        let made = try await ProcessRunner().run(
            ["openssl", "cms", "-sign", "-binary", "-in", unsigned, "-signer", rsa.certificate, "-inkey", rsa.key,
             "-outform", "DER", "-nocerts", "-md", "sha256", "-out", message])
        try #require(made.succeeded, "openssl cms -sign: \(made.standardError)")
        let signFile = try #require(Self.signFile)
        let signed = scratch.path + "/attrs.ko"
        let attached = try await ProcessRunner().run([signFile, "-s", message, "sha256", rsa.certificate, unsigned, signed])
        try #require(attached.succeeded, "sign-file -s: \(attached.standardError)")
        let changed = try Self.changeOneByte(signed, as: "attrs-changed.ko", in: scratch)
        for (module, expected) in [(signed, SignatureVerification.Verdict.valid), (changed, .invalid)] {
            let ours = try Self.verdict(module, rsa.certificate)
            #expect(ours.verdict == expected, "\(module): \(ours.summary)")
            #expect(try await Self.opensslVerdict(module, certificates: rsa.certificate, in: scratch) == expected)
        }
        #expect(try Self.verdict(changed, rsa.certificate).reason?.contains("digest differs") == true)
    }

    /// Signed then compressed (as Debian ships 6.12's modules): the signature inside the
    /// stream is checked. Compressed then signed: checked over the compressed bytes, and
    /// reported as a signature the kernel never sees.
    @Test func compressionPlacements() async throws {
        let scratch = try ScratchDirectory()
        let unsigned = try await Self.unsignedModule(in: scratch)
        let rsa = try await Self.makeKey("nvbuild-xz", .rsa, in: scratch)
        let signed = try await Self.sign(unsigned, with: rsa, as: "signed.ko", in: scratch)
        _ = try await ProcessRunner().run(["xz", "-k", "-f", signed])
        let signedThenCompressed = signed + ".xz"
        let compressed = scratch.path + "/compressed.ko"
        try FileManager.default.copyItem(atPath: unsigned, toPath: compressed)
        _ = try await ProcessRunner().run(["xz", "-f", compressed])
        let compressedThenSigned = try await Self.sign(compressed + ".xz", with: rsa, as: "compressed-signed.ko.xz", in: scratch)

        let inside = try Self.verdict(signedThenCompressed, rsa.certificate)
        #expect(inside.verdict == .valid && inside.placement == .signedThenCompressed && inside.isValidForKernel, "\(inside.summary)")
        let outside = try Self.verdict(compressedThenSigned, rsa.certificate)
        #expect(outside.verdict == .valid && outside.placement == .compressedThenSigned && !outside.isValidForKernel, "\(outside.summary)")
        #expect(outside.summary.contains("the kernel sees the module unsigned"))
        for module in [signedThenCompressed, compressedThenSigned] {
            #expect(try await Self.opensslVerdict(module, certificates: rsa.certificate, in: scratch) == .valid, "\(module)")
        }
        #expect(try Self.verdict(compressed + ".xz", rsa.certificate).verdict == .unsigned)
    }

    /// Debian signs its modules with a key made for each build, whose certificate is built
    /// into the kernel image: every module of one directory verifies against it, as openssl
    /// finds, and against any other certificate is signed by an unknown key, never invalid.
    @Test(arguments: InstalledKernel.all)
    func debianModulesAgainstTheImagesBuiltInCertificates(kernel: InstalledKernel) async throws {
        try InstalledKernels.requireImage(kernel.release)
        let scratch = try ScratchDirectory()
        let image = "/boot/vmlinuz-\(kernel.release)"
        let builtIn = try SigningCertificate.load(path: image)
        #expect(!builtIn.isEmpty)
        let bundle = try builtIn.map { try $0.certificate.serializeAsPEM().pemString }.joined(separator: "\n")
        let certificates = scratch.write("builtin.pem", Array((bundle + "\n").utf8))
        let other = try await Self.makeKey("nvbuild-unknown", .rsa, in: scratch)

        // One directory: the one holding the middle module of the sorted list.
        let all = kernel.modules()
        let directory = try #require(all.isEmpty ? nil : (all[all.count / 2] as NSString).deletingLastPathComponent)
        let modules = all.filter { ($0 as NSString).deletingLastPathComponent == directory }
        var verdicts: [SignatureVerification.Verdict: Int] = [:]
        for module in modules {
            let ours = try SignatureVerifier.verify(path: module, certificates: builtIn)
            let reference = try await Self.opensslVerdict(module, certificates: certificates, in: scratch)
            verdicts[ours.verdict, default: 0] += 1
            #expect(ours.verdict == reference, "\(module): openssl says \(reference), we say \(ours.summary)")
            #expect(ours.verdict == .valid, "\(module): \(ours.summary)")
            let unknown = try Self.verdict(module, other.certificate)
            let keyID = try #require(try ModuleFile.read(path: module, parts: .signature).signature?.keyID)
            #expect(unknown.verdict == .unknownKey, "\(module): \(unknown.summary)")
            #expect(unknown.keySerial == keyID.map { String(format: "%02x", $0) }.joined())
        }
        #expect(verdicts[.valid] == modules.count, "\(directory): \(verdicts)")
    }

    /// Damaged PKCS#7 messages (seeded, format-blind damage of the message, with the trailer
    /// kept consistent): nothing crashes, and every verdict is the one openssl reaches, bytes
    /// after the message ignored as both the kernel and openssl ignore them.
    @Test func damagedMessagesAgreeWithOpenSSL() async throws {
        let scratch = try ScratchDirectory()
        let unsigned = try await Self.unsignedModule(in: scratch)
        let rsa = try await Self.makeKey("nvbuild-damage", .rsa, in: scratch)
        let signed = try await Self.sign(unsigned, with: rsa, as: "signed.ko", in: scratch)
        let signedBytes = [UInt8](try #require(FileManager.default.contents(atPath: signed)))
        let (content, message) = try #require(Self.splitSignature(signedBytes))
        let trusted = try SigningCertificate.load(path: rsa.certificate)
        var random = SeededGenerator(seed: 18)
        var seen: [SignatureVerification.Verdict: Int] = [:]
        for round in 0..<120 {
            let damaged = Mutation.damage(message, using: &random)
            guard !damaged.isEmpty else { continue }
            let length = UInt32(damaged.count)
            let descriptor: [UInt8] = [0, 0, 2, 0, 0, 0, 0, 0] + (0..<4).map { UInt8(truncatingIfNeeded: length >> (8 * (3 - $0))) }
            let module = scratch.write("damaged-\(round).ko", content + damaged + descriptor + Array("~Module signature appended~\n".utf8))
            let ours = try SignatureVerifier.verify(path: module, certificates: trusted)
            seen[ours.verdict, default: 0] += 1
            // An algorithm the kernel does not know fails its parse (ENOPKG) before any key
            // is looked up; openssl looks for the signer first. The verdict follows the kernel.
            if ours.verdict == .unsupported {
                #expect(ours.reason?.contains("not supported") == true, "\(ours.summary)")
                continue
            }
            let reference = try await Self.opensslVerdict(module, certificates: rsa.certificate, in: scratch)
            #expect(ours.verdict == reference, "round \(round): openssl says \(reference), we say \(ours.summary)")
        }
        #expect(seen[.invalid, default: 0] > 0, "\(seen)")
    }

    @Test func certificateFilesThatAreNotCertificatesAreOneLine() async throws {
        let scratch = try ScratchDirectory()
        let key = try await Self.makeKey("nvbuild-key", .rsa, in: scratch)
        for (path, expected) in [
            (key.key, "no CERTIFICATE block"),
            (scratch.write("garbage.der", Array(repeating: 0x42, count: 64)), "not an X.509 certificate"),
            (scratch.path + "/missing.crt", "cannot read the certificate file"),
        ] {
            do {
                _ = try SigningCertificate.load(path: path)
                Issue.record("\(path) loaded")
            } catch {
                #expect(error.kind == .environment)
                #expect(error.message.hasPrefix(path + ": ") && error.message.contains(expected), "\(error.message)")
                #expect(!error.message.contains("\n"))
            }
        }
        let der = scratch.path + "/cert.der"
        _ = try await ProcessRunner().run(["openssl", "x509", "-in", key.certificate, "-outform", "DER", "-out", der])
        #expect(try SigningCertificate.load(path: der).first?.subject == "CN=nvbuild-key")
    }
}
