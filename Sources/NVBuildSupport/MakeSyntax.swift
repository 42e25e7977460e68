import Foundation

/// The little of make's syntax nvbuild reads from Makefiles and Kbuild files.
public enum MakeSyntax {
    /// Make's logical lines: comments removed, backslash continuations joined.
    public static func logicalLines(_ text: String) -> [String] {
        var lines: [String] = []
        var current = ""
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            var line = String(raw)
            if let hash = line.firstIndex(of: "#") { line = String(line[..<hash]) }
            if line.hasSuffix("\\") {
                current += line.dropLast() + " "
                continue
            }
            lines.append(current + line)
            current = ""
        }
        if !current.isEmpty { lines.append(current) }
        return lines
    }

    /// The words assigned to `variable` by its first `=`, `:=`, `?=` or `+=` line.
    public static func listValue(of variable: String, in text: String) -> [String] {
        for line in logicalLines(text) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard trimmed.hasPrefix(variable) else { continue }
            let rest = trimmed.dropFirst(variable.count).trimmingCharacters(in: .whitespaces)
            for op in [":=", "+=", "?=", "="] where rest.hasPrefix(op) {
                return rest.dropFirst(op.count).split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            }
        }
        return []
    }
}
