import Foundation
import KernelTree
import ModuleELF
import NVBuildSupport
import X509

/// Signs built modules for one kernel with that kernel's own `scripts/sign-file` and the
/// digest its `.config` names (`CONFIG_MODULE_SIG_HASH`), as `make modules_sign` would.
/// Everything that can be wrong with the kernel, the key or the certificate is found by
/// `prepare`, before anything is built or signed, and is one line.
public struct ModuleSigner: Sendable {
    public let release: String
    /// The kernel's `scripts/sign-file`.
    public let signFile: String
    /// `CONFIG_MODULE_SIG_HASH` of the kernel: `sha256`, `sha512`, ...
    public let hashAlgorithm: String
    /// The private key: a file, or a `pkcs11:` URI that sign-file hands to OpenSSL.
    public let key: String
    public let certificatePath: String
    public let certificate: SigningCertificate

    /// Finds the kernel's sign-file and hash and checks that the key and the certificate
    /// exist, belong together and that sign-file signs with them (one probe signature in
    /// `scratchDirectory`, checked with `SignatureVerifier`).
    public static func prepare(
        for target: KernelTarget, key: String, certificate certificatePath: String,
        scratchDirectory: String = NSTemporaryDirectory()
    ) async throws(UserError) -> ModuleSigner {
        let release = target.release
        guard target.facts.moduleSig else {
            throw UserError(.environment, "kernel \(release) is built without CONFIG_MODULE_SIG (\(target.configPath)): it does not check module signatures; build without signing")
        }
        guard let hash = target.facts.moduleSigHash, !hash.isEmpty else {
            throw UserError(.environment, "kernel \(release): CONFIG_MODULE_SIG_HASH is not set in \(target.configPath); the kernel's .config must name the digest to sign with")
        }
        let candidates = [target.outputDirectory, target.sourceDirectory].map { $0 + "/scripts/sign-file" }
        guard let signFile = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw UserError(.environment, "kernel \(release): no executable scripts/sign-file in \(target.outputDirectory) (Debian ships it in linux-kbuild-*, which linux-headers-\(release) depends on; reinstall the headers)")
        }
        if !key.hasPrefix("pkcs11:") {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: key, isDirectory: &isDirectory), !isDirectory.boolValue else {
                throw UserError(.environment, "\(key): no such signing key file (give the private key the certificate was made for, e.g. DKMS's /var/lib/dkms/mok.key)")
            }
            guard FileManager.default.isReadableFile(atPath: key) else {
                throw UserError(.environment, "\(key): the signing key is not readable by this user (run as its owner or root)")
            }
        }
        guard FileManager.default.fileExists(atPath: certificatePath) else {
            throw UserError(.environment, "\(certificatePath): no such certificate file (give the X.509 certificate of the signing key, e.g. DKMS's /var/lib/dkms/mok.pub)")
        }
        let certificates = try SigningCertificate.load(path: certificatePath)
        guard let certificate = certificates.first, !certificate.source.contains("(built-in") else {
            throw UserError(.environment, "\(certificatePath): a kernel image, not a signing certificate; give the X.509 certificate (PEM or DER) of the signing key")
        }
        if !key.hasPrefix("pkcs11:"), let privateKey = Self.privateKey(at: key),
            privateKey.publicKey != certificate.certificate.publicKey
        {
            throw UserError(.environment, "\(key) does not match the certificate \(certificatePath) (\(certificate.subject)): its public key differs; use the key the certificate was made for")
        }
        let signer = ModuleSigner(
            release: release, signFile: signFile, hashAlgorithm: hash, key: key,
            certificatePath: certificatePath, certificate: certificate)
        try await signer.probe(in: scratchDirectory)
        return signer
    }

    /// The key when swift-certificates can read it (unencrypted PEM: PKCS#8, PKCS#1, SEC1);
    /// other forms (encrypted, DER) are left to sign-file and the probe.
    private static func privateKey(at path: String) -> Certificate.PrivateKey? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return try? Certificate.PrivateKey(pemEncoded: text)
    }

    /// Signs a scratch file and checks the signature: sign-file runs, accepts the key and
    /// the certificate, and what it writes verifies against the certificate.
    private func probe(in scratchDirectory: String) async throws(UserError) {
        let base = "\(scratchDirectory)/nvbuild-sign-probe-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer {
            try? FileManager.default.removeItem(atPath: base)
            try? FileManager.default.removeItem(atPath: base + ".signed")
        }
        guard FileManager.default.createFile(atPath: base, contents: Data("nvbuild signing probe\n".utf8)) else {
            throw UserError(.environment, "\(scratchDirectory): cannot write the signing probe file (check that the directory exists and is writable)")
        }
        try await run(base, to: base + ".signed")
        let checked: SignatureVerification
        do { checked = try SignatureVerifier.verify(path: base + ".signed", certificates: [certificate]) } catch {
            throw UserError(.environment, "\(error.description)")
        }
        guard checked.verdict == .valid || checked.verdict == .unsupported else {
            throw UserError(.environment, "\(key): \(signFile) signs with it, but the signature does not verify against \(certificatePath) (\(checked.summary)); use the key the certificate was made for")
        }
    }

    /// Runs sign-file on `input`, writing `output`; its last line of complaint on failure.
    private func run(_ input: String, to output: String) async throws(UserError) {
        let result: ProcessOutput
        do {
            result = try await ProcessRunner().run([signFile, hashAlgorithm, key, certificatePath, input, output])
        } catch {
            throw UserError(.environment, "\(signFile): cannot run it (\(error))")
        }
        guard result.succeeded else {
            let lines = result.standardError.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            let complaint = lines.last { !$0.isEmpty } ?? "exit status \(result.exitStatus)"
            if complaint.contains("private key does not match certificate") || complaint.contains("key values mismatch") {
                throw UserError(.environment, "\(key) does not match the certificate \(certificatePath) (\(certificate.subject)); use the key the certificate was made for")
            }
            throw UserError(.environment, "\(signFile) could not sign with \(key) and \(certificatePath): \(complaint)")
        }
    }

    /// Signs the module at `path` in place: an existing signature is replaced (one by this
    /// very key and hash is kept as it is), the new file
    /// is verified against the certificate before it is renamed over the old one, and on
    /// any failure the module is left as it was. Compressed modules are refused: the
    /// kernel checks the signature of the decompressed module, so sign before compressing.
    @discardableResult
    public func sign(_ path: String) async throws(UserError) -> SignatureVerification {
        let compression: ModuleCompression
        do { compression = try ModuleImage.compression(path: path) } catch {
            throw UserError(.environment, error.description)
        }
        guard compression == .none else {
            throw UserError(.failed, "\(path): compressed (\(compression.rawValue)); the kernel checks the signature inside the compressed stream, so sign the .ko before compressing it")
        }
        // Already signed by this key with this hash (a warm rebuild that did not relink it):
        // signing again would give the same signature.
        if let existing = try? SignatureVerifier.verify(path: path, certificates: [certificate]),
            existing.verdict == .valid, existing.placement == .uncompressed, existing.hashAlgorithm == hashAlgorithm
        {
            return existing
        }
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        let stem = "\(directory)/.\(url.lastPathComponent).sign-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let unsigned = stem + ".unsigned", signed = stem + ".signed"
        defer {
            try? FileManager.default.removeItem(atPath: unsigned)
            try? FileManager.default.removeItem(atPath: signed)
        }
        // sign-file appends; a signature already there would be signed over as content.
        var input = path
        if let bytes = FileManager.default.contents(atPath: path) {
            let length = bytes.withUnsafeBytes { ModuleImage.unsignedLength($0) }
            if length < bytes.count {
                guard FileManager.default.createFile(atPath: unsigned, contents: bytes.prefix(length)) else {
                    throw UserError(.failed, "\(directory): cannot write a temporary file to re-sign \(url.lastPathComponent) (check free space and permissions)")
                }
                input = unsigned
            }
        } else {
            throw UserError(.environment, "\(path): cannot read the module to sign it")
        }
        do { try await run(input, to: signed) } catch { throw UserError(.failed, "\(path): \(error.message)") }
        let checked: SignatureVerification
        do { checked = try SignatureVerifier.verify(path: signed, certificates: [certificate]) } catch {
            throw UserError(.failed, error.description)
        }
        guard checked.verdict == .valid || checked.verdict == .unsupported else {
            throw UserError(.failed, "\(path): the signature sign-file wrote does not verify against \(certificatePath) (\(checked.summary))")
        }
        // sign-file creates its output with the default mode; keep the module's own.
        if let mode = (try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] {
            try? FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: signed)
        }
        guard rename(signed, path) == 0 else {
            throw UserError(.failed, "\(path): cannot replace it with the signed module (\(String(cString: strerror(errno))))")
        }
        return checked
    }

    /// Removes a signature appended to the uncompressed module at `path` (one an earlier
    /// signed build left on a module make did not relink), so an unsigned build's modules
    /// are unsigned. Returns whether there was one.
    @discardableResult
    public static func removeSignature(_ path: String) throws(UserError) -> Bool {
        let magic = Array("~Module signature appended~\n".utf8)
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        let size = (try? handle.seekToEnd()) ?? 0
        guard size > UInt64(magic.count) else { try? handle.close(); return false }
        try? handle.seek(toOffset: size - UInt64(magic.count))
        let tail = (try? handle.readToEnd()) ?? Data()
        try? handle.close()
        guard Array(tail) == magic, let bytes = FileManager.default.contents(atPath: path) else { return false }
        let length = bytes.withUnsafeBytes { ModuleImage.unsignedLength($0) }
        guard length < bytes.count else { return false }
        guard truncate(path, off_t(length)) == 0 else {
            throw UserError(.failed, "\(path): cannot remove the signature an earlier signed build left (\(String(cString: strerror(errno))))")
        }
        return true
    }
}
