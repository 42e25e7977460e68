import Crypto
import Foundation
import NVBuildSupport
import SwiftASN1
import X509

/// What checking a module's signature against a set of certificates found, as the kernel
/// would decide it if those certificates were its trusted keys.
public struct SignatureVerification: Sendable, Codable, Equatable {
    public enum Verdict: String, Sendable, Codable {
        /// The signature verifies with the key of one of the given certificates.
        case valid
        /// None of the given certificates is the one the signature names.
        case unknownKey
        /// The signature's certificate was given but the signature does not verify: the
        /// content changed after signing, or the message is malformed.
        case invalid
        case unsigned
        /// The signature uses an algorithm this build cannot check (e.g. sha224, sm3, RSA-PSS).
        case unsupported
    }

    public var verdict: Verdict
    /// Where the checked signature sits; absent when unsigned.
    public var placement: ModuleSignature.Placement?
    /// The digest algorithm the signature names (`sha256`, ...).
    public var hashAlgorithm: String?
    /// The key the signature names: the issuer and serial number of its certificate
    /// (serial as lower-case hex), or the certificate's subject key identifier.
    public var keyIssuer: String?
    public var keySerial: String?
    public var subjectKeyID: String?
    /// For `valid`: the subject of the certificate whose key verified it, and where it came from.
    public var certificateSubject: String?
    public var certificateSource: String?
    /// For `invalid` and `unsupported`: why, in one sentence.
    public var reason: String?
    /// For `invalid`: the errno the kernel's `mod_verify_sig` returns for this fault when it is
    /// not EKEYREJECTED (EBADMSG for a malformed trailer or message, ENOPKG for a signature
    /// that is not PKCS#7, EINVAL for a message that carries its own content).
    public var invalidErrno: Int32?

    /// What the kernel's `mod_verify_sig` returns for this module when the given certificates
    /// are its trusted keys: 0, ENODATA (unsigned: no signature it sees), ENOKEY (no trusted
    /// key is the signer's; the kernel cannot tell a changed module from an intact one then),
    /// ENOPKG (an algorithm it cannot check), EKEYREJECTED (the signer's key is trusted and
    /// the signature does not verify) or EBADMSG (malformed). The first three are the ones
    /// `module_sig_check` forgives when signatures are not enforced.
    public var kernelErrno: Int32 {
        switch verdict {
        case .valid: return placement == .compressedThenSigned ? 61 : 0
        case .unsigned: return 61
        case .unknownKey: return placement == .compressedThenSigned ? 61 : 126
        case .unsupported: return placement == .compressedThenSigned ? 61 : 65
        case .invalid: return placement == .compressedThenSigned ? 61 : (invalidErrno ?? 129)
        }
    }

    public init(verdict: Verdict) { self.verdict = verdict }

    /// Valid, and where the kernel sees it: a signature appended after compressing is lost
    /// when the module is decompressed for loading.
    public var isValidForKernel: Bool { verdict == .valid && placement != .compressedThenSigned }

    /// The key as a person reads it: `issuer CN=..., serial 5E:E1:...` or `subject key id AB:...`.
    public var keyDescription: String? {
        if let keyIssuer, let keySerial { return "issuer \(keyIssuer), serial \(colonHex(keySerial))" }
        if let subjectKeyID { return "subject key id \(colonHex(subjectKeyID))" }
        return nil
    }

    /// One line: the verdict and what it rests on.
    public var summary: String {
        var text: String
        switch verdict {
        case .valid:
            text = "valid: signed by \(certificateSubject ?? "?")"
            if let certificateSource { text += " (\(certificateSource))" }
        case .unknownKey:
            text = "signed by an unknown key: \(keyDescription ?? "no key named")"
        case .invalid:
            text = "invalid: \(reason ?? "the signature does not verify")"
        case .unsigned:
            text = "unsigned"
        case .unsupported:
            text = "cannot be checked: \(reason ?? "unsupported algorithm")"
        }
        if placement == .compressedThenSigned {
            text += "; the signature is outside the compressed stream, so the kernel sees the module unsigned"
        }
        return text
    }
}

private func colonHex(_ lowerHex: String) -> String {
    var pairs: [String] = []
    var index = lowerHex.startIndex
    while index < lowerHex.endIndex {
        let next = lowerHex.index(index, offsetBy: 2, limitedBy: lowerHex.endIndex) ?? lowerHex.endIndex
        pairs.append(lowerHex[index..<next].uppercased())
        index = next
    }
    return pairs.joined(separator: ":")
}

/// An X.509 certificate whose key may have signed modules, with where it was read from.
public struct SigningCertificate: Sendable {
    public var certificate: Certificate
    /// The file, and for a file of several certificates which one (`file#2`, `vmlinuz (built-in #1)`).
    public var source: String
    public var subject: String { certificate.subject.description }

    public init(certificate: Certificate, source: String) {
        self.certificate = certificate
        self.source = source
    }

    /// The certificates in `path`: PEM (any number of CERTIFICATE blocks), one DER
    /// certificate, or a kernel image (vmlinuz or vmlinux) whose built-in trusted
    /// certificates are read. Anything else is one line naming the file.
    public static func load(path: String) throws(UserError) -> [SigningCertificate] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw UserError(.environment, "\(path): cannot read the certificate file (check the path and its permissions)")
        }
        let bytes = [UInt8](data)
        if let text = String(bytes: bytes, encoding: .utf8), text.contains("-----BEGIN") {
            let documents: [PEMDocument]
            do { documents = try PEMDocument.parseMultiple(pemString: text) } catch {
                throw UserError(.environment, "\(path): malformed PEM (\(error)); give a PEM or DER X.509 certificate")
            }
            let blocks = documents.filter { $0.discriminator == "CERTIFICATE" }
            guard !blocks.isEmpty else {
                throw UserError(.environment, "\(path): no CERTIFICATE block in the PEM file; give the certificate, not the key")
            }
            var found: [SigningCertificate] = []
            for (index, block) in blocks.enumerated() {
                do {
                    found.append(SigningCertificate(
                        certificate: try Certificate(derEncoded: block.derBytes),
                        source: blocks.count == 1 ? path : "\(path)#\(index + 1)"))
                } catch {
                    throw UserError(.environment, "\(path): certificate \(index + 1) is not valid X.509 (\(error))")
                }
            }
            return found
        }
        if let certificate = try? Certificate(derEncoded: bytes) {
            return [SigningCertificate(certificate: certificate, source: path)]
        }
        if KernelImageCertificates.isKernelImage(bytes) {
            let builtIn: [Certificate]
            do { builtIn = try KernelImageCertificates.read(bytes, path: path) } catch {
                throw UserError(.environment, "\(path): \(error.detail)")
            }
            guard !builtIn.isEmpty else {
                throw UserError(.environment, "\(path): the kernel image has no built-in certificate list; give the signing certificate itself")
            }
            return builtIn.enumerated().map { SigningCertificate(certificate: $1, source: "\(path) (built-in #\($0 + 1))") }
        }
        throw UserError(.environment, "\(path): not an X.509 certificate (PEM or DER) nor a kernel image; give the certificate that signed the modules")
    }
}

/// Checks module signatures cryptographically, as the kernel's module loader does: the
/// PKCS#7 message after the module, over the bytes before it, with the signer's key
/// found by issuer and serial number (or subject key identifier) among trusted certificates.
///
/// The CMS message is read with swift-asn1 into the few fields the check needs, and the
/// signature checked with swift-certificates' public-key API. swift-certificates has a CMS
/// verifier, but behind `@_spi(CMS)` and with internal message types, and it fits module
/// signatures poorly: it finds the signer only among the certificates inside the message
/// (sign-file leaves them out, CMS_NOCERTS) and rejects the `rsaEncryption` signature
/// algorithm OpenSSL writes for RSA keys.
public enum SignatureVerifier {
    /// Verifies the module at `path`. For a compressed file the signature inside the
    /// compressed stream is the one checked (the kernel checks the decompressed module); a
    /// signature appended after compressing is checked over the compressed bytes and
    /// reported with its placement.
    public static func verify(path: String, certificates: [SigningCertificate]) throws(ModuleReadError) -> SignatureVerification {
        let raw = try ModuleBytes.map(path: path)
        defer { withExtendedLifetime(raw) {} }
        let compression = ModuleCompression.detect(raw.buffer)
        if compression == .none { return check(raw.buffer, placement: .uncompressed, certificates: certificates) }
        var payload = raw.buffer
        let outer = SignatureReader.hasMagic(raw.buffer)
            ? SignatureReader.read(raw.buffer, placement: .compressedThenSigned) : nil
        if let outer { payload = UnsafeRawBufferPointer(rebasing: raw.buffer[..<outer.1]) }
        let image = try Decompressor.decompress(payload, format: compression, path: path)
        defer { withExtendedLifetime(image) {} }
        if SignatureReader.hasMagic(image.buffer) {
            return check(image.buffer, placement: .signedThenCompressed, certificates: certificates)
        }
        if outer != nil { return check(raw.buffer, placement: .compressedThenSigned, certificates: certificates) }
        return SignatureVerification(verdict: .unsigned)
    }

    /// Checks the trailer at the end of `bytes` against the rules of the kernel's
    /// `mod_check_sig`, then the PKCS#7 message over the bytes before it.
    static func check(
        _ bytes: UnsafeRawBufferPointer, placement: ModuleSignature.Placement, certificates: [SigningCertificate]
    ) -> SignatureVerification {
        guard let descriptor = SignatureReader.descriptor(bytes) else { return SignatureVerification(verdict: .unsigned) }
        var result = SignatureVerification(verdict: .invalid)
        result.placement = placement
        guard descriptor.signatureLength > 0, descriptor.signatureLength < descriptor.offset else {
            result.reason = "the signature length in the trailer (\(descriptor.signatureLength) bytes) does not fit the module"
            result.invalidErrno = 74
            return result
        }
        guard descriptor.idType == 2 else {
            result.reason = "the signature is not PKCS#7 (id type \(descriptor.idType)); the kernel checks only PKCS#7 module signatures"
            result.invalidErrno = 65
            return result
        }
        guard descriptor.algorithm == 0, descriptor.hash == 0, descriptor.signerLength == 0, descriptor.keyIDLength == 0,
            descriptor.padding.allSatisfy({ $0 == 0 })
        else {
            result.reason = "the PKCS#7 trailer sets descriptor fields the kernel requires to be zero"
            result.invalidErrno = 74
            return result
        }
        let start = descriptor.offset - descriptor.signatureLength
        let message = Array(bytes[start..<descriptor.offset])
        return verify(content: UnsafeRawBufferPointer(rebasing: bytes[..<start]), message: message,
                      placement: placement, certificates: certificates)
    }

    /// Checks a detached PKCS#7 `message` over `content`.
    static func verify(
        content: UnsafeRawBufferPointer, message: [UInt8], placement: ModuleSignature.Placement,
        certificates: [SigningCertificate]
    ) -> SignatureVerification {
        var result = SignatureVerification(verdict: .invalid)
        result.placement = placement
        let signedData: PKCS7SignedData
        do { signedData = try PKCS7SignedData(message) } catch {
            result.reason = "the PKCS#7 message cannot be parsed (\(error))"
            result.invalidErrno = 74
            return result
        }
        guard !signedData.carriesContent else {
            result.reason = "the PKCS#7 message carries its own content; a module signature must be detached"
            result.invalidErrno = 22
            return result
        }
        guard !signedData.signers.isEmpty else {
            result.reason = "the PKCS#7 message has no signer"
            result.invalidErrno = 126
            return result
        }
        // The kernel requires every signer to verify; report the first that does not.
        var first: SignatureVerification?
        for signer in signedData.signers {
            let outcome = verify(signer, content: content, placement: placement, certificates: certificates)
            if outcome.verdict != .valid { return outcome }
            if first == nil { first = outcome }
        }
        return first!
    }

    private static func verify(
        _ signer: PKCS7SignerInfo, content: UnsafeRawBufferPointer, placement: ModuleSignature.Placement,
        certificates: [SigningCertificate]
    ) -> SignatureVerification {
        var result = SignatureVerification(verdict: .invalid)
        result.placement = placement
        let digest = DigestAlgorithm(signer.digestAlgorithm)
        result.hashAlgorithm = digest?.name ?? signer.digestAlgorithm.description
        switch signer.identifier {
        case .issuerAndSerial(let issuer, let serial):
            result.keyIssuer = issuer.description
            result.keySerial = hex(Array(serial.bytes.drop { $0 == 0 }))
        case .subjectKeyID(let identifier):
            result.subjectKeyID = hex(Array(identifier))
        }
        let algorithm: Certificate.SignatureAlgorithm
        switch SignatureAlgorithmChoice.choose(digest: digest, digestOID: signer.digestAlgorithm, signature: signer.signatureAlgorithm) {
        case .supported(let chosen): algorithm = chosen
        case .unsupported(let reason):
            result.verdict = .unsupported
            result.reason = reason
            return result
        case .mismatch(let reason):
            result.reason = reason
            result.invalidErrno = 74
            return result
        }
        // With signed attributes the signature covers them, and they carry the content's
        // digest: a changed module shows here, before any key is looked up (as in the kernel).
        var signedBytes: [UInt8]? = nil
        if let attributes = signer.signedAttributes, let digest {
            guard let expected = attributes.messageDigest else {
                result.reason = "the signed attributes carry no message digest"
                result.invalidErrno = 74
                return result
            }
            guard digest.hash(content) == Array(expected) else {
                result.reason = "the module's content changed after signing (its \(digest.name) digest differs from the signed one)"
                return result
            }
            signedBytes = attributes.encodingToSign
        }
        let candidates = certificates.filter { signer.identifier.names($0.certificate) }
        guard !candidates.isEmpty else {
            result.verdict = .unknownKey
            return result
        }
        for candidate in candidates {
            let verified = signedBytes.map {
                candidate.certificate.publicKey.isValidSignature(signer.signature, for: $0, signatureAlgorithm: algorithm)
            } ?? candidate.certificate.publicKey.isValidSignature(signer.signature, for: content, signatureAlgorithm: algorithm)
            if verified {
                result.verdict = .valid
                result.certificateSubject = candidate.subject
                result.certificateSource = candidate.source
                return result
            }
        }
        result.reason = signedBytes == nil
            ? "the signature does not match the module's content with the key of \(candidates[0].subject) (\(candidates[0].source)): the module changed after signing, or another key was used"
            : "the signature over the signed attributes does not verify with the key of \(candidates[0].subject) (\(candidates[0].source))"
        return result
    }
}

/// The digest algorithms a module signature may name that this build can compute.
struct DigestAlgorithm: Sendable {
    let name: String
    let hash: @Sendable (UnsafeRawBufferPointer) -> [UInt8]

    init?(_ oid: ASN1ObjectIdentifier) {
        switch oid {
        case [1, 3, 14, 3, 2, 26]: self.init("sha1") { Array(Insecure.SHA1.hash(data: $0)) }
        case [2, 16, 840, 1, 101, 3, 4, 2, 1]: self.init("sha256") { Array(SHA256.hash(data: $0)) }
        case [2, 16, 840, 1, 101, 3, 4, 2, 2]: self.init("sha384") { Array(SHA384.hash(data: $0)) }
        case [2, 16, 840, 1, 101, 3, 4, 2, 3]: self.init("sha512") { Array(SHA512.hash(data: $0)) }
        default: return nil
        }
    }

    private init(_ name: String, _ hash: @escaping @Sendable (UnsafeRawBufferPointer) -> [UInt8]) {
        self.name = name
        self.hash = hash
    }

    /// Names of digests the kernel knows but this build cannot compute, for the message.
    static func knownName(_ oid: ASN1ObjectIdentifier) -> String? {
        switch oid {
        case [2, 16, 840, 1, 101, 3, 4, 2, 4]: return "sha224"
        case [2, 16, 840, 1, 101, 3, 4, 2, 8]: return "sha3-256"
        case [2, 16, 840, 1, 101, 3, 4, 2, 9]: return "sha3-384"
        case [2, 16, 840, 1, 101, 3, 4, 2, 10]: return "sha3-512"
        case [1, 2, 156, 10197, 1, 401]: return "sm3"
        case [1, 2, 840, 113549, 2, 5]: return "md5"
        default: return nil
        }
    }
}

/// The pair (public-key algorithm, digest) as swift-certificates names it. PKCS#7 from
/// OpenSSL names RSA keys `rsaEncryption` and leaves the hash to the digest algorithm.
enum SignatureAlgorithmChoice {
    case supported(Certificate.SignatureAlgorithm)
    case unsupported(String)
    case mismatch(String)

    private enum Family { case rsa, ecdsa }

    static func choose(digest: DigestAlgorithm?, digestOID: ASN1ObjectIdentifier, signature: ASN1ObjectIdentifier) -> Self {
        let family: Family
        var impliedDigest: String? = nil
        switch signature {
        case [1, 2, 840, 113549, 1, 1, 1]: family = .rsa
        case [1, 2, 840, 113549, 1, 1, 5]: (family, impliedDigest) = (.rsa, "sha1")
        case [1, 2, 840, 113549, 1, 1, 11]: (family, impliedDigest) = (.rsa, "sha256")
        case [1, 2, 840, 113549, 1, 1, 12]: (family, impliedDigest) = (.rsa, "sha384")
        case [1, 2, 840, 113549, 1, 1, 13]: (family, impliedDigest) = (.rsa, "sha512")
        case [1, 2, 840, 10045, 2, 1]: family = .ecdsa
        case [1, 2, 840, 10045, 4, 3, 2]: (family, impliedDigest) = (.ecdsa, "sha256")
        case [1, 2, 840, 10045, 4, 3, 3]: (family, impliedDigest) = (.ecdsa, "sha384")
        case [1, 2, 840, 10045, 4, 3, 4]: (family, impliedDigest) = (.ecdsa, "sha512")
        case [1, 2, 840, 113549, 1, 1, 10]: return .unsupported("RSA-PSS signatures are not supported here")
        default: return .unsupported("signature algorithm \(signature) is not supported here")
        }
        guard let digest else {
            let name = DigestAlgorithm.knownName(digestOID) ?? "\(digestOID)"
            return .unsupported("the \(name) digest is not supported here")
        }
        if let impliedDigest, impliedDigest != digest.name {
            return .mismatch("the signature algorithm names \(impliedDigest) but the digest algorithm is \(digest.name)")
        }
        switch (family, digest.name) {
        case (.rsa, "sha1"): return .supported(.sha1WithRSAEncryption)
        case (.rsa, "sha256"): return .supported(.sha256WithRSAEncryption)
        case (.rsa, "sha384"): return .supported(.sha384WithRSAEncryption)
        case (.rsa, "sha512"): return .supported(.sha512WithRSAEncryption)
        case (.ecdsa, "sha256"): return .supported(.ecdsaWithSHA256)
        case (.ecdsa, "sha384"): return .supported(.ecdsaWithSHA384)
        case (.ecdsa, "sha512"): return .supported(.ecdsaWithSHA512)
        default: return .unsupported("ECDSA with \(digest.name) is not supported here")
        }
    }
}

// MARK: - The PKCS#7 message (RFC 5652 SignedData), read through swift-asn1

/// The parts of a SignedData a module check needs; certificates and CRLs inside the
/// message are skipped: only the certificates the caller trusts may verify a module.
struct PKCS7SignedData {
    var carriesContent: Bool
    var signers: [PKCS7SignerInfo]

    private static let signedDataOID: ASN1ObjectIdentifier = [1, 2, 840, 113549, 1, 7, 2]

    init(_ bytes: [UInt8]) throws {
        // BER: the kernel's parser accepts it, and DER is a subset.
        let root = try BER.parse(Self.firstElement(bytes))
        (carriesContent, signers) = try DER.sequence(root, identifier: .sequence) { nodes in
            let type = try ASN1ObjectIdentifier(derEncoded: &nodes)
            guard type == Self.signedDataOID else {
                throw ASN1Error.invalidASN1Object(reason: "content type \(type) is not signedData")
            }
            return try DER.explicitlyTagged(&nodes, tagNumber: 0, tagClass: .contextSpecific) { node in
                try DER.sequence(node, identifier: .sequence) { nodes in
                    _ = try Int(derEncoded: &nodes)  // version
                    _ = try DER.set(of: PKCS7Algorithm.self, identifier: .set, nodes: &nodes)
                    let carries = try DER.sequence(Self.next(&nodes), identifier: .sequence) { nodes in
                        _ = try ASN1ObjectIdentifier(derEncoded: &nodes)
                        return try DER.optionalExplicitlyTagged(&nodes, tagNumber: 0, tagClass: .contextSpecific) { _ in true } ?? false
                    }
                    _ = DER.optionalImplicitlyTagged(&nodes, tagNumber: 0, tagClass: .contextSpecific) { _ in () }  // certificates
                    _ = DER.optionalImplicitlyTagged(&nodes, tagNumber: 1, tagClass: .contextSpecific) { _ in () }  // crls
                    let signers = try DER.set(of: PKCS7SignerInfo.self, identifier: .set, nodes: &nodes)
                    return (carries, signers)
                }
            }
        }
    }

    /// The bytes of the message's outer element. The kernel's decoder and OpenSSL both stop
    /// after it and ignore what follows, where swift-asn1 refuses trailing bytes; the
    /// definite length in its header says where it ends (an indefinite one is left whole).
    static func firstElement(_ bytes: [UInt8]) -> ArraySlice<UInt8> {
        guard bytes.count >= 2 else { return bytes[...] }
        let first = Int(bytes[1])
        var length = first, header = 2
        if first > 0x80 {
            let count = first & 0x7F
            guard count <= 4, bytes.count >= 2 + count else { return bytes[...] }
            length = bytes[2..<(2 + count)].reduce(0) { $0 << 8 | Int($1) }
            header += count
        } else if first == 0x80 {
            return bytes[...]
        }
        return header + length < bytes.count ? bytes[..<(header + length)] : bytes[...]
    }

    static func next(_ nodes: inout ASN1NodeCollection.Iterator) throws -> ASN1Node {
        guard let node = nodes.next() else { throw ASN1Error.invalidASN1Object(reason: "the message ends early") }
        return node
    }
}

/// AlgorithmIdentifier: the OID; parameters (NULL or absent for the algorithms here) are skipped.
struct PKCS7Algorithm: DERParseable {
    var oid: ASN1ObjectIdentifier

    init(derEncoded node: ASN1Node) throws {
        oid = try DER.sequence(node, identifier: .sequence) { nodes in
            let oid = try ASN1ObjectIdentifier(derEncoded: &nodes)
            _ = nodes.next()
            return oid
        }
    }
}

struct PKCS7SignerInfo: DERParseable {
    enum Identifier {
        case issuerAndSerial(DistinguishedName, Certificate.SerialNumber)
        case subjectKeyID(ArraySlice<UInt8>)

        /// Whether `certificate` is the one this identifier names, as the kernel matches it.
        func names(_ certificate: Certificate) -> Bool {
            switch self {
            case .issuerAndSerial(let issuer, let serial):
                return certificate.issuer == issuer && certificate.serialNumber == serial
            case .subjectKeyID(let identifier):
                return (try? certificate.extensions.subjectKeyIdentifier)?.keyIdentifier == identifier
            }
        }
    }

    struct SignedAttributes {
        /// The DER the signature covers: the attributes re-tagged as a SET (RFC 5652 § 5.4).
        var encodingToSign: [UInt8]
        var messageDigest: ArraySlice<UInt8>?
    }

    var identifier: Identifier
    var digestAlgorithm: ASN1ObjectIdentifier
    var signedAttributes: SignedAttributes?
    var signatureAlgorithm: ASN1ObjectIdentifier
    var signature: ArraySlice<UInt8>

    private static let messageDigestOID: ASN1ObjectIdentifier = [1, 2, 840, 113549, 1, 9, 4]

    init(derEncoded node: ASN1Node) throws {
        (identifier, digestAlgorithm, signedAttributes, signatureAlgorithm, signature) =
            try DER.sequence(node, identifier: .sequence) { nodes in
                _ = try Int(derEncoded: &nodes)  // version
                let sid = try PKCS7SignedData.next(&nodes)
                let identifier: Identifier
                if sid.identifier == .sequence {
                    identifier = try DER.sequence(sid, identifier: .sequence) { nodes in
                        let issuer = try DistinguishedName(derEncoded: PKCS7SignedData.next(&nodes))
                        let serial = try ArraySlice<UInt8>(derEncoded: &nodes)
                        return .issuerAndSerial(issuer, Certificate.SerialNumber(bytes: serial))
                    }
                } else if sid.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific),
                    case .primitive(let keyID) = sid.content
                {
                    identifier = .subjectKeyID(keyID)
                } else {
                    throw ASN1Error.invalidASN1Object(reason: "unknown signer identifier \(sid.identifier)")
                }
                let digest = try PKCS7Algorithm(derEncoded: &nodes).oid
                let attributes = try DER.optionalImplicitlyTagged(&nodes, tagNumber: 0, tagClass: .contextSpecific) { node in
                    try Self.signedAttributes(node)
                }
                let algorithm = try PKCS7Algorithm(derEncoded: &nodes).oid
                let signature = try ASN1OctetString(derEncoded: &nodes).bytes
                _ = DER.optionalImplicitlyTagged(&nodes, tagNumber: 1, tagClass: .contextSpecific) { _ in () }
                return (identifier, digest, attributes, algorithm, signature)
            }
    }

    private static func signedAttributes(_ node: ASN1Node) throws -> SignedAttributes {
        guard case .constructed(let attributes) = node.content else {
            throw ASN1Error.invalidASN1Object(reason: "signed attributes are not a set")
        }
        var digest: ArraySlice<UInt8>? = nil
        for attribute in attributes {
            try DER.sequence(attribute, identifier: .sequence) { nodes in
                let type = try ASN1ObjectIdentifier(derEncoded: &nodes)
                let values = try DER.set(of: ASN1Any.self, identifier: .set, nodes: &nodes)
                if type == messageDigestOID, let value = values.first {
                    digest = try ASN1OctetString(asn1Any: value).bytes
                }
            }
        }
        var encoding = Array(node.encodedBytes)
        encoding[0] = 0x31
        return SignedAttributes(encodingToSign: encoding, messageDigest: digest)
    }
}

extension ModuleImage {
    /// How many bytes of `image` come before its appended signature trailer, if any (the
    /// whole image when there is none): what a re-signing strips first.
    public static func unsignedLength(_ image: UnsafeRawBufferPointer) -> Int {
        guard let descriptor = SignatureReader.descriptor(image) else { return image.count }
        let start = descriptor.offset - descriptor.signatureLength - descriptor.signerLength - descriptor.keyIDLength
        return start >= 0 ? start : image.count
    }

    /// The format `path` is stored in, recognised by magic bytes.
    public static func compression(path: String) throws(ModuleReadError) -> ModuleCompression {
        let raw = try ModuleBytes.map(path: path)
        return withExtendedLifetime(raw) { ModuleCompression.detect(raw.buffer) }
    }
}
