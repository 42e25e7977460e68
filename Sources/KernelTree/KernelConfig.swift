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
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            guard line.hasPrefix("CONFIG_"), let eq = line.firstIndex(of: "=") else { continue }
            let key = String(line[..<eq])
            var value = String(line[line.index(after: eq)...])
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                value = String(value.dropFirst().dropLast())
                    .replacingOccurrences(of: "\\\"", with: "\"")
                    .replacingOccurrences(of: "\\\\", with: "\\")
            }
            values[key] = value
        }
        self.values = values
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
