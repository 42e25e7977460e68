import Foundation
import Kbuild
import KernelTree
import ModuleELF
import NVBuildSupport
import TestSupport
import Testing

/// `ModuleSigner` with each installed kernel's own sign-file and hash, keys made here by
/// `openssl req`, and a real installed module (its signature removed) as the module to sign.
@Suite struct ModuleSignerTests {
    final class Scratch {
        let path: String
        init() throws {
            path = NSTemporaryDirectory() + "kbuild-sign-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }
    }

    struct Key {
        var key: String
        var certificate: String
    }

    static func makeKey(_ name: String, ec: Bool = false, in scratch: Scratch) async throws -> Key {
        let key = Key(key: "\(scratch.path)/\(name).key", certificate: "\(scratch.path)/\(name).crt")
        let algorithm = ec ? ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] : ["-newkey", "rsa:2048"]
        let made = try await ProcessRunner().run(
            ["openssl", "req", "-new", "-x509"] + algorithm
                + ["-nodes", "-subj", "/CN=\(name)", "-days", "2", "-keyout", key.key, "-out", key.certificate])
        try #require(made.succeeded, "openssl req: \(made.standardError)")
        return key
    }

    /// `CONFIG_MODULE_SIG_HASH` read from the kernel's .config here, not through KernelConfig.
    static func configuredHash(_ target: KernelTarget) throws -> String? {
        let config = try String(contentsOfFile: target.configPath, encoding: .utf8)
        return config.split(separator: "\n").first { $0.hasPrefix("CONFIG_MODULE_SIG_HASH=") }
            .map { $0.dropFirst("CONFIG_MODULE_SIG_HASH=".count).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
    }

    /// The first module of `release`, decompressed with the real xz/zstd when stored compressed.
    static func installedModule(_ release: String, in scratch: Scratch) async throws -> String {
        try InstalledKernels.requireImage(release)
        let root = "/lib/modules/\(release)/kernel"
        let walker = try #require(FileManager.default.enumerator(atPath: root))
        var first: String?
        while let relative = walker.nextObject() as? String {
            if relative.hasSuffix(".ko") || relative.hasSuffix(".ko.xz") || relative.hasSuffix(".ko.zst") {
                if first == nil || relative < first! { first = relative }
            }
        }
        let module = root + "/" + (try #require(first, "kernel \(release) has no modules"))
        let copy = scratch.path + "/module.ko"
        if module.hasSuffix(".ko") {
            try FileManager.default.copyItem(atPath: module, toPath: copy)
        } else {
            let tool = module.hasSuffix(".xz") ? "xz" : "zstd"
            let result = try await ProcessRunner().run([tool, "-dc", module], standardOutputPath: copy)
            try #require(result.succeeded, "\(tool) -dc \(module): \(result.standardError)")
        }
        return copy
    }

    @Test(arguments: InstalledKernels.standard)
    func signsWithTheKernelsOwnSignFileAndHash(release: String) async throws {
        let scratch = try Scratch()
        let target = try KernelDiscovery().kernel(release: release)
        let rsa = try await Self.makeKey("nvbuild-test", in: scratch)
        let ec = try await Self.makeKey("nvbuild-test-ec", ec: true, in: scratch)
        let module = try await Self.installedModule(release, in: scratch)
        func contentLength() throws -> Int {
            let bytes = [UInt8](try #require(FileManager.default.contents(atPath: module)))
            return bytes.withUnsafeBytes { ModuleImage.unsignedLength($0) }
        }
        // Debian's own signature is there first; signing replaces it rather than signing over it.
        let content = try contentLength()
        #expect(try ModuleFile.read(path: module, parts: .signature).signature != nil)

        let signer = try await ModuleSigner.prepare(for: target, key: rsa.key, certificate: rsa.certificate, scratchDirectory: scratch.path)
        #expect(signer.hashAlgorithm == (try Self.configuredHash(target)))
        #expect(signer.signFile.hasPrefix(target.outputDirectory) || signer.signFile.hasPrefix(target.sourceDirectory))
        let result = try await signer.sign(module)
        #expect(result.verdict == .valid && result.certificateSubject == "CN=nvbuild-test", "\(result.summary)")
        let signature = try #require(try ModuleFile.read(path: module, parts: .signature).signature)
        #expect(signature.signer == "nvbuild-test" && signature.hashAlgorithm == signer.hashAlgorithm)

        #expect(try contentLength() == content)

        let ecSigner = try await ModuleSigner.prepare(for: target, key: ec.key, certificate: ec.certificate, scratchDirectory: scratch.path)
        try await ecSigner.sign(module)
        #expect(try contentLength() == content)
        #expect(try SignatureVerifier.verify(path: module, certificates: SigningCertificate.load(path: ec.certificate)).verdict == .valid)
        #expect(try SignatureVerifier.verify(path: module, certificates: SigningCertificate.load(path: rsa.certificate)).verdict == .unknownKey)
    }

    @Test func problemsAreOneLineBeforeAnythingIsSigned() async throws {
        let scratch = try Scratch()
        let release = try #require(InstalledKernels.standard.first, "no standard kernel installed (scripts/setup)")
        let target = try KernelDiscovery().kernel(release: release)
        let rsa = try await Self.makeKey("nvbuild-one", in: scratch)
        let other = try await Self.makeKey("nvbuild-two", in: scratch)
        var unsigning = target
        unsigning.facts.moduleSig = false
        var noSignFile = target
        noSignFile.outputDirectory = scratch.path
        noSignFile.sourceDirectory = scratch.path
        let cases: [(target: KernelTarget, key: String, certificate: String, expected: String)] = [
            (target, scratch.path + "/missing.key", rsa.certificate, "missing.key: no such signing key file"),
            (target, rsa.key, scratch.path + "/missing.crt", "missing.crt: no such certificate file"),
            (target, other.key, rsa.certificate, "nvbuild-two.key does not match the certificate"),
            (target, rsa.key, rsa.key, "no CERTIFICATE block"),
            (noSignFile, rsa.key, rsa.certificate, "no executable scripts/sign-file in \(scratch.path)"),
            (unsigning, rsa.key, rsa.certificate, "built without CONFIG_MODULE_SIG"),
        ]
        for (target, key, certificate, expected) in cases {
            do {
                _ = try await ModuleSigner.prepare(for: target, key: key, certificate: certificate, scratchDirectory: scratch.path)
                Issue.record("prepare accepted \(key) / \(certificate) for \(target.release)")
            } catch {
                #expect(error.kind == .environment)
                #expect(error.message.contains(expected) && !error.message.contains("\n"), "\(error.message)")
            }
        }
        // A compressed module is refused, and left as it was.
        let signer = try await ModuleSigner.prepare(for: target, key: rsa.key, certificate: rsa.certificate, scratchDirectory: scratch.path)
        let module = try await Self.installedModule(release, in: scratch)
        _ = try await ProcessRunner().run(["xz", "-f", module])
        let before = FileManager.default.contents(atPath: module + ".xz")
        do {
            try await signer.sign(module + ".xz")
            Issue.record("signed a compressed module")
        } catch {
            #expect(error.message.contains("compressed (xz)") && error.message.contains("sign the .ko before compressing"), "\(error.message)")
        }
        #expect(FileManager.default.contents(atPath: module + ".xz") == before)
    }
}
