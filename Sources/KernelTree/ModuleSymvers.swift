import Foundation

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
    /// Raw lines, kept because conftest's export checks are textual.
    public private(set) var lines: [String]
    private var index: [String: Int]

    public init(parsing text: String) {
        var exports: [SymbolExport] = []
        var lines: [String] = []
        var index: [String: Int] = [:]
        for raw in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let line = String(raw)
            lines.append(line)
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
        self.lines = lines
        self.index = index
    }

    /// Whether the file at `path` lists at least one vmlinux export, without parsing every line.
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
        self.init(parsing: try String(contentsOfFile: path, encoding: .utf8))
    }

    public subscript(symbol: String) -> SymbolExport? {
        index[symbol].map { exports[$0] }
    }

    /// True when at least one export comes from vmlinux (conftest's Module.symvers sanity check).
    public var hasVmlinuxExports: Bool {
        exports.contains { $0.module.hasPrefix("vmlinux") }
    }
}
