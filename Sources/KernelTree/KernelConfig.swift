import Foundation

/// The kernel's `.config`: `CONFIG_X=value` lines. `=m` options are kept as
/// "m"; options that are "not set" are absent.
public struct KernelConfig: Sendable, Equatable {
    public private(set) var values: [String: String]

    public init(values: [String: String]) {
        self.values = values
    }

    /// Parses `.config` text. Lines that are neither assignments nor comments are ignored.
    public init(parsing text: String) {
        var values: [String: String] = [:]
        var text = text
        // A .config is ASCII without carriage returns: split it byte by byte. Anything
        // else goes the Character-wise way, whose "\r\n" and cluster rules differ.
        let parsedBytes = text.withUTF8 { bytes -> Bool in
            guard !bytes.contains(where: { $0 >= 0x80 || $0 == UInt8(ascii: "\r") }) else { return false }
            for line in bytes.split(separator: UInt8(ascii: "\n")) {
                guard line.starts(with: "CONFIG_".utf8), let eq = line.firstIndex(of: UInt8(ascii: "=")) else { continue }
                let key = String(decoding: UnsafeBufferPointer(rebasing: line[..<eq]), as: UTF8.self)
                values[key] = Self.value(String(decoding: UnsafeBufferPointer(rebasing: line[(eq + 1)...]), as: UTF8.self))
            }
            return true
        }
        if !parsedBytes {
            for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
                guard line.hasPrefix("CONFIG_"), let eq = line.firstIndex(of: "=") else { continue }
                values[String(line[..<eq])] = Self.value(String(line[line.index(after: eq)...]))
            }
        }
        self.values = values
    }

    /// A value as written after `=`, with the quotes and escapes of a string value removed.
    private static func value(_ written: String) -> String {
        var value = written
        if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
            value = String(value.dropFirst().dropLast())
                .replacingOccurrences(of: "\\\"", with: "\"")
                .replacingOccurrences(of: "\\\\", with: "\\")
        }
        return value
    }

    public subscript(option: String) -> String? {
        values[option.hasPrefix("CONFIG_") ? option : "CONFIG_" + option]
    }

    /// True for `=y` (and any value other than `n`); `=m` counts only when `includingModule`.
    public func isEnabled(_ option: String, includingModule: Bool = false) -> Bool {
        guard let v = self[option] else { return false }
        if v == "m" { return includingModule }
        return v != "n"
    }
}
