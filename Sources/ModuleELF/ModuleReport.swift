/// The `--json` document for one module: a stable, documented schema
/// (docs/inspect-json-schema.md). Bump `schemaVersion` on any incompatible change.
public struct ModuleReport: Sendable, Codable, Equatable {
    public static let currentSchemaVersion = 1

    public struct Field: Sendable, Codable, Equatable {
        public var key: String
        public var value: String
    }

    public struct Signature: Sendable, Codable, Equatable {
        public var idType: String
        public var keyAlgorithm: String?
        public var hashAlgorithm: String
        public var signer: String
        public var keyID: String
        public var signature: String
        public var trailerSize: Int
        public var placement: ModuleSignature.Placement
        /// Whether the kernel can see this signature when it loads the module.
        public var visibleToKernel: Bool
    }

    public struct Section: Sendable, Codable, Equatable {
        public var index: Int
        public var name: String
        public var type: String
        public var flags: String
        public var offset: UInt64
        public var size: UInt64
        public var alignment: UInt64
    }

    /// An export as schema 1 spells it (`name`, `gplOnly`, `namespace`), from `SymbolExport`.
    public struct Export: Sendable, Codable, Equatable {
        public var name: String
        public var gplOnly: Bool
        public var namespace: String?
        /// The `__crc_` CRC as `crcText` writes it; absent when the module has none (no modversions).
        public var crc: String?
    }

    public struct Version: Sendable, Codable, Equatable {
        public var name: String
        public var crc: String
    }

    public var schemaVersion = ModuleReport.currentSchemaVersion
    public var path: String
    public var compression: ModuleCompression?
    public var fileSize: Int?
    public var imageSize: Int?
    public var elfClass: Int?
    public var machine: Int?
    public var modinfo: [Field]?
    public var signature: Signature?
    public var exports: [Export]?
    public var undefinedSymbols: [String]?
    public var versions: [Version]?
    public var sections: [Section]?
    /// The cryptographic check of the signature, present only with `--verify-signature`.
    public var signatureVerification: SignatureVerification?
    /// Set instead of everything else when the file could not be read.
    public var error: String?

    public init(path: String, error: ModuleReadError) {
        self.path = path
        self.error = error.detail
    }

    public init(_ module: ModuleFile, path: String) {
        self.path = path
        compression = module.compression
        fileSize = module.fileSize
        imageSize = module.imageSize
        elfClass = module.elfClass
        machine = Int(module.machine)
        modinfo = module.modinfo.map { Field(key: $0.key, value: $0.value) }
        signature = module.signature.map { signature in
            Signature(
                idType: signature.idType, keyAlgorithm: signature.keyAlgorithm, hashAlgorithm: signature.hashAlgorithm,
                signer: signature.signer, keyID: hex(signature.keyID), signature: hex(signature.signature),
                trailerSize: signature.trailerSize, placement: signature.placement,
                visibleToKernel: signature.placement != .compressedThenSigned)
        }
        exports = module.exports.map {
            Export(name: $0.symbol, gplOnly: $0.isGPLOnly, namespace: $0.namespace, crc: $0.crc == 0 ? nil : crcText(UInt64($0.crc)))
        }
        undefinedSymbols = module.undefinedSymbols
        versions = module.versions.map { Version(name: $0.name, crc: crcText($0.crc)) }
        sections = module.sections.map {
            Section(index: $0.index, name: $0.name, type: $0.typeName, flags: $0.flagLetters,
                    offset: $0.offset, size: $0.size, alignment: $0.alignment)
        }
    }
}

/// Lower-case hex without separators.
func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var text: [UInt8] = []
    text.reserveCapacity(bytes.count * 2)
    for byte in bytes {
        text.append(digits[Int(byte >> 4)])
        text.append(digits[Int(byte & 0xF)])
    }
    return String(decoding: text, as: UTF8.self)
}

/// `0x` and eight hex digits (more when the CRC does not fit 32 bits), as Module.symvers writes it.
public func crcText(_ crc: UInt64) -> String {
    let digits = String(crc, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}
