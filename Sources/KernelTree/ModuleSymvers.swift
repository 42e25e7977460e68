import Foundation
import NVBuildSupport

/// One line of `Module.symvers`: `crc<TAB>symbol<TAB>module<TAB>export type[<TAB>namespace]`.
public struct SymbolExport: Sendable, Equatable, Codable {
    public var crc: UInt32
    public var symbol: String
    public var module: String
    public var exportType: String
    public var namespace: String?

    public var isGPLOnly: Bool { exportType.hasSuffix("_GPL") }
}

/// The kernel's exported symbols, as Kbuild's modpost wrote them.
public struct ModuleSymvers: Sendable {
    public private(set) var exports: [SymbolExport]
    private var index: [String: Int]

    public init(parsing text: String) {
        var exports: [SymbolExport] = []
        var index: [String: Int] = [:]
        for raw in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let line = String(raw)
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard fields.count >= 4 else { continue }
            let crcText = fields[0].hasPrefix("0x") ? String(fields[0].dropFirst(2)) : fields[0]
            let export = SymbolExport(
                crc: UInt32(truncatingIfNeeded: UInt64(crcText, radix: 16) ?? 0),
                symbol: fields[1],
                module: fields[2],
                exportType: fields[3],
                namespace: fields.count > 4 && !fields[4].isEmpty ? fields[4] : nil
            )
            if index[export.symbol] == nil { index[export.symbol] = exports.count }
            exports.append(export)
        }
        self.exports = exports
        self.index = index
    }

    /// Whether the file at `path` lists at least one vmlinux export (conftest's Module.symvers
    /// sanity check: a line whose third field starts with vmlinux), without parsing every line.
    public static func hasVmlinuxExports(at path: String) -> Bool? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> Bool in
            for line in raw.split(separator: UInt8(ascii: "\n")) {
                let fields = line.split(separator: UInt8(ascii: "\t"), maxSplits: 3, omittingEmptySubsequences: false)
                if fields.count >= 3, fields[2].starts(with: "vmlinux".utf8) { return true }
            }
            return false
        }
    }

    public init(contentsOf path: String) throws {
        self.init(parsing: try TextFile.read(path))
    }

    public subscript(symbol: String) -> SymbolExport? {
        index[symbol].map { exports[$0] }
    }
}

extension ModuleSymvers {
    /// Calls `body` for each export of a Module.symvers text in file order, with the
    /// rules of `init(parsing:)`, keeping nothing: for readers of the kernel's tens of
    /// thousands of exports. ASCII text without carriage returns (every file modpost
    /// writes) is split byte by byte; anything else takes the `init(parsing:)` path.
    public static func forEachExport(in text: String, naming symbols: Set<String>? = nil, _ body: (SymbolExport) throws -> Void) rethrows {
        var text = text
        let handled = try text.withUTF8 { bytes -> Bool in
            // Character-wise splitting treats "\r\n" and non-ASCII clusters specially.
            guard !bytes.contains(where: { $0 >= 0x80 || $0 == UInt8(ascii: "\r") }) else { return false }
            try forEachExportLine(in: UnsafeRawBufferPointer(bytes), naming: symbols, body)
            return true
        }
        if !handled {
            for export in ModuleSymvers(parsing: text).exports where symbols?.contains(export.symbol) ?? true { try body(export) }
        }
    }

    /// The exports of the file at `path` whose symbol is one of `symbols`, in file order
    /// (empty when the file cannot be read): what conftest's symbol checks need of the
    /// kernel's tens of thousands.
    public static func exports(naming symbols: Set<String>, inFileAt path: String) -> [SymbolExport] {
        guard !symbols.isEmpty, let data = FileManager.default.contents(atPath: path) else { return [] }
        var found: [SymbolExport] = []
        forEachExport(in: String(decoding: data, as: UTF8.self), naming: symbols) { found.append($0) }
        return found
    }

    private static let exportSymbolType = "EXPORT_SYMBOL"
    private static let exportSymbolGPLType = "EXPORT_SYMBOL_GPL"

    private static func forEachExportLine(in bytes: UnsafeRawBufferPointer, naming symbols: Set<String>?, _ body: (SymbolExport) throws -> Void) rethrows {
        let newline = UInt8(ascii: "\n")
        let tab = UInt8(ascii: "\t")
        var lineStart = 0
        while lineStart < bytes.count {
            let lineEnd = bytes[lineStart...].firstIndex(of: newline) ?? bytes.count
            defer { lineStart = lineEnd + 1 }
            if lineEnd == lineStart { continue }
            // Up to five fields are used; a sixth and later ones only count.
            var fields: [Range<Int>] = []
            fields.reserveCapacity(5)
            var fieldStart = lineStart
            var fieldCount = 0
            for index in lineStart...lineEnd where index == lineEnd || bytes[index] == tab {
                if fields.count < 5 { fields.append(fieldStart..<index) }
                fieldCount += 1
                fieldStart = index + 1
            }
            guard fieldCount >= 4 else { continue }
            func text(_ range: Range<Int>) -> String {
                String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
            }
            let symbol = text(fields[1])
            // Readers that want a few symbols skip building the rest of every other entry.
            if let symbols, !symbols.contains(symbol) { continue }
            let typeBytes = bytes[fields[3]]
            let exportType =
                typeBytes.elementsEqual(exportSymbolType.utf8) ? exportSymbolType
                : typeBytes.elementsEqual(exportSymbolGPLType.utf8) ? exportSymbolGPLType : text(fields[3])
            try body(SymbolExport(
                crc: crc(bytes, fields[0]),
                symbol: symbol,
                module: text(fields[2]),
                exportType: exportType,
                namespace: fields.count > 4 && !fields[4].isEmpty ? text(fields[4]) : nil))
        }
    }

    /// The CRC field as `init(parsing:)` reads it: an optional "0x", then hexadecimal;
    /// 0 when it is not a number.
    private static func crc(_ bytes: UnsafeRawBufferPointer, _ field: Range<Int>) -> UInt32 {
        var digits = field
        if digits.count >= 2, bytes[digits.lowerBound] == UInt8(ascii: "0"), bytes[digits.lowerBound + 1] == UInt8(ascii: "x") {
            digits = (digits.lowerBound + 2)..<digits.upperBound
        }
        var value: UInt64 = 0
        if (1...16).contains(digits.count) {
            for index in digits {
                let byte = bytes[index]
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: return slowCRC(bytes, digits)
                }
                value = value << 4 | UInt64(digit)
            }
            return UInt32(truncatingIfNeeded: value)
        }
        return slowCRC(bytes, digits)
    }

    private static func slowCRC(_ bytes: UnsafeRawBufferPointer, _ digits: Range<Int>) -> UInt32 {
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[digits]), as: UTF8.self)
        return UInt32(truncatingIfNeeded: UInt64(text, radix: 16) ?? 0)
    }
}
