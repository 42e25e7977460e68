/// The signature appended to a module (`~Module signature appended~`), read as libkmod reads it.
public struct ModuleSignature: Sendable, Equatable {
    /// Where the signature sits relative to compression. The kernel verifies the image it
    /// loads after decompressing, so only a signature inside the compressed payload counts.
    public enum Placement: String, Sendable, Codable {
        /// An uncompressed module with the signature appended.
        case uncompressed
        /// Signed, then compressed: the kernel and modprobe accept this.
        case signedThenCompressed
        /// Compressed, then signed: the signature is outside the compressed stream and is
        /// lost when the module is decompressed for loading, so the kernel rejects it as unsigned.
        case compressedThenSigned
    }

    /// `PKCS#7`, `X509` or `PGP` (the `sig_id` field).
    public var idType: String
    /// Public-key algorithm from the trailer (`RSA`, `DSA`); PKCS#7 trailers leave it unset.
    public var keyAlgorithm: String?
    /// `sha256`, `sha512`, ... (`sig_hashalgo`).
    public var hashAlgorithm: String
    /// Signer's name bytes (the issuer's common name for PKCS#7).
    public var signerBytes: [UInt8]
    /// Key identifier (the certificate serial number for PKCS#7).
    public var keyID: [UInt8]
    /// The signature value itself.
    public var signature: [UInt8]
    /// Size of the whole trailer (signature block, descriptor and magic) in bytes.
    public var trailerSize: Int
    public var placement: Placement

    public var signer: String { String(decoding: signerBytes, as: UTF8.self) }
}

enum SignatureReader {
    static let magic = Array("~Module signature appended~\n".utf8)
    private static let descriptorSize = 12
    private static let hashNames = ["md4", "md5", "sha1", "rmd160", "sha256", "sha384", "sha512", "sha224", "sm3"]
    private static let idTypes = ["PGP", "X509", "PKCS#7"]
    private static let keyAlgorithms = ["DSA", "RSA"]

    static func hasMagic(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= magic.count && bytes[(bytes.count - magic.count)...].elementsEqual(magic)
    }

    /// The `module_signature` descriptor before the magic, as raw fields: what libkmod and
    /// the kernel's own check each judge in their own way.
    struct Descriptor {
        var algorithm: Int
        var hash: Int
        var idType: Int
        var signerLength: Int
        var keyIDLength: Int
        /// The three padding bytes; the kernel refuses a PKCS#7 trailer where they are not zero.
        var padding: [UInt8]
        var signatureLength: Int
        /// Offset of the descriptor, which the signature block ends at.
        var offset: Int
    }

    /// The descriptor of the trailer at the end of `bytes`; nil without the magic.
    static func descriptor(_ bytes: UnsafeRawBufferPointer) -> Descriptor? {
        guard hasMagic(bytes), bytes.count - magic.count >= descriptorSize else { return nil }
        let offset = bytes.count - magic.count - descriptorSize
        return Descriptor(
            algorithm: Int(bytes[offset]), hash: Int(bytes[offset + 1]), idType: Int(bytes[offset + 2]),
            signerLength: Int(bytes[offset + 3]), keyIDLength: Int(bytes[offset + 4]),
            padding: Array(bytes[(offset + 5)..<(offset + 8)]),
            signatureLength: Int(UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self))),
            offset: offset)
    }

    /// Parses the trailer; nil when there is none or libkmod would not accept it.
    /// Returns the signature and the offset where the signed content ends.
    static func read(_ bytes: UnsafeRawBufferPointer, placement: ModuleSignature.Placement) -> (ModuleSignature, Int)? {
        guard let fields = Self.descriptor(bytes) else { return nil }
        let descriptor = fields.offset
        let algorithm = fields.algorithm
        let hash = fields.hash
        let idType = fields.idType
        let signerLength = fields.signerLength
        let keyIDLength = fields.keyIDLength
        let signatureLength = fields.signatureLength
        guard algorithm < keyAlgorithms.count, hash < hashNames.count, idType < idTypes.count,
            signatureLength > 0, descriptor >= signerLength + keyIDLength + signatureLength
        else { return nil }
        let signatureStart = descriptor - signatureLength
        let trailerSize = bytes.count - signatureStart
        if idType == 2 {
            // PKCS#7: libkmod (built with OpenSSL) reports the first signer's issuer CN,
            // serial number, digest algorithm and encrypted digest from the DER message.
            guard let signed = PKCS7.firstSigner(UnsafeRawBufferPointer(rebasing: bytes[signatureStart..<descriptor])) else {
                return nil
            }
            return (ModuleSignature(
                idType: idTypes[idType], keyAlgorithm: nil, hashAlgorithm: signed.hashAlgorithm,
                signerBytes: signed.issuerName, keyID: signed.serial, signature: signed.encryptedDigest,
                trailerSize: trailerSize + signerLength + keyIDLength, placement: placement), signatureStart - signerLength - keyIDLength)
        }
        let keyIDStart = signatureStart - keyIDLength
        let signerStart = keyIDStart - signerLength
        return (ModuleSignature(
            idType: idTypes[idType], keyAlgorithm: keyAlgorithms[algorithm], hashAlgorithm: hashNames[hash],
            signerBytes: Array(bytes[signerStart..<keyIDStart]), keyID: Array(bytes[keyIDStart..<signatureStart]),
            signature: Array(bytes[signatureStart..<descriptor]),
            trailerSize: bytes.count - signerStart, placement: placement), signerStart)
    }
}

/// Just enough DER to read a PKCS#7 SignedData's first SignerInfo. Every read is bounds-checked;
/// anything unexpected yields nil.
enum PKCS7 {
    struct Signer {
        var issuerName: [UInt8]
        var serial: [UInt8]
        var hashAlgorithm: String
        var encryptedDigest: [UInt8]
    }

    struct Reader {
        let bytes: UnsafeRawBufferPointer
        var position: Int
        let end: Int

        init(_ bytes: UnsafeRawBufferPointer, from start: Int = 0, to end: Int? = nil) {
            self.bytes = bytes
            position = start
            self.end = end ?? bytes.count
        }

        var atEnd: Bool { position >= end }

        func peekTag() -> UInt8? { position < end ? bytes[position] : nil }

        /// Reads one element: its tag and a reader over its contents.
        mutating func element() -> (tag: UInt8, contents: Reader)? {
            guard position + 2 <= end else { return nil }
            let tag = bytes[position]
            var cursor = position + 1
            let first = Int(bytes[cursor])
            cursor += 1
            var length = 0
            if first < 0x80 {
                length = first
            } else {
                let count = first & 0x7F
                // Indefinite lengths (count 0) are BER, not DER; very long lengths are nonsense.
                guard count >= 1, count <= 4, cursor + count <= end else { return nil }
                for _ in 0..<count {
                    length = length << 8 | Int(bytes[cursor])
                    cursor += 1
                }
            }
            guard length <= end - cursor else { return nil }
            position = cursor + length
            return (tag, Reader(bytes, from: cursor, to: cursor + length))
        }

        mutating func expect(_ tag: UInt8) -> Reader? {
            guard let (found, contents) = element(), found == tag else { return nil }
            return contents
        }

        var contentBytes: [UInt8] { Array(bytes[position..<end]) }
    }

    private static let signedDataOID: [UInt8] = [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02]
    private static let commonNameOID: [UInt8] = [0x55, 0x04, 0x03]
    private static let digestOIDs: [([UInt8], String)] = [
        ([0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x02, 0x04], "md4"),
        ([0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x02, 0x05], "md5"),
        ([0x2B, 0x0E, 0x03, 0x02, 0x1A], "sha1"),
        ([0x2B, 0x24, 0x03, 0x02, 0x01], "rmd160"),
        ([0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01], "sha256"),
        ([0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02], "sha384"),
        ([0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03], "sha512"),
        ([0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04], "sha224"),
        ([0x2A, 0x81, 0x1C, 0xCF, 0x55, 0x01, 0x83, 0x11], "sm3"),
    ]

    static func firstSigner(_ der: UnsafeRawBufferPointer) -> Signer? {
        var top = Reader(der)
        guard var contentInfo = top.expect(0x30),
            var oid = contentInfo.expect(0x06), oid.contentBytes == signedDataOID,
            var explicit = contentInfo.expect(0xA0),
            var signedData = explicit.expect(0x30)
        else { return nil }
        _ = oid.element()
        // version, digestAlgorithms, contentInfo, then optional [0] certificates and [1] CRLs.
        guard signedData.expect(0x02) != nil, signedData.expect(0x31) != nil, signedData.expect(0x30) != nil else { return nil }
        while let tag = signedData.peekTag(), tag == 0xA0 || tag == 0xA1 {
            _ = signedData.element()
        }
        guard var signerInfos = signedData.expect(0x31), var signerInfo = signerInfos.expect(0x30),
            signerInfo.expect(0x02) != nil,
            var issuerAndSerial = signerInfo.expect(0x30),
            let issuer = issuerAndSerial.expect(0x30),
            let serial = issuerAndSerial.expect(0x02),
            var digestAlgorithm = signerInfo.expect(0x30),
            let digestOID = digestAlgorithm.expect(0x06)
        else { return nil }
        if signerInfo.peekTag() == 0xA0 { _ = signerInfo.element() }
        guard signerInfo.expect(0x30) != nil, let digest = signerInfo.expect(0x04) else { return nil }
        let digestBytes = digestOID.contentBytes
        let hashName = digestOIDs.first { $0.0 == digestBytes }?.1 ?? "unknown"
        // OpenSSL's BN_bn2bin of the serial: the magnitude without leading zero bytes.
        var serialBytes = serial.contentBytes[...]
        while serialBytes.first == 0 { serialBytes = serialBytes.dropFirst() }
        guard let name = issuerCommonName(issuer) else { return nil }
        return Signer(issuerName: name, serial: Array(serialBytes), hashAlgorithm: hashName, encryptedDigest: digest.contentBytes)
    }

    /// The first commonName in the issuer; like libkmod, falls back to the last attribute
    /// when there is no commonName, and to empty when the name has no attributes.
    private static func issuerCommonName(_ issuer: Reader) -> [UInt8]? {
        var rdns = issuer
        var last: [UInt8]? = nil
        while !rdns.atEnd {
            guard var set = rdns.expect(0x31) else { return nil }
            while !set.atEnd {
                guard var attribute = set.expect(0x30), let type = attribute.expect(0x06),
                    let (_, value) = attribute.element()
                else { return nil }
                var text = value.contentBytes
                // Like strlen on the decoded string: stop at the first NUL.
                if let nul = text.firstIndex(of: 0) { text = Array(text[..<nul]) }
                if type.contentBytes == commonNameOID { return text }
                last = text
            }
        }
        return last ?? []
    }
}
