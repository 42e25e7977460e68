import Foundation

/// One line a conftest test emits into its header: almost always `#define NAME [VALUE]`
/// or `#undef NAME`. Kept typed so readers (summaries, `probe diff`) never re-parse text;
/// `text` is the line exactly as written to conftest/.
public enum MacroLine: Sendable, Hashable, CustomStringConvertible {
    case define(String, value: String?)
    case undef(String)
    /// Anything else the tree's conftest.sh or a catalog result prints, kept verbatim.
    case other(String)

    /// Classifies a line; a line that would not be written back exactly is `.other`,
    /// so `MacroLine(parsing: s).text == s` always holds.
    public init(parsing line: String) {
        let words = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        let parsed: MacroLine
        switch (words.first, words.count) {
        case ("#undef", 2): parsed = .undef(words[1])
        case ("#define", 2): parsed = .define(words[1], value: nil)
        case ("#define", 3): parsed = .define(words[1], value: words[2])
        default: parsed = .other(line)
        }
        self = parsed.macro?.isEmpty == false && parsed.text == line ? parsed : .other(line)
    }

    public var text: String {
        switch self {
        case .define(let name, let value): return "#define \(name)" + (value.map { " " + $0 } ?? "")
        case .undef(let name): return "#undef \(name)"
        case .other(let line): return line
        }
    }

    public var description: String { text }

    /// The macro a `#define` or `#undef` line is about.
    public var macro: String? {
        switch self {
        case .define(let name, _), .undef(let name): return name
        case .other: return nil
        }
    }
}

/// Encoded as its text: the report's `lines` have always been strings.
extension MacroLine: Codable {
    public init(from decoder: Decoder) throws {
        self.init(parsing: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(text)
    }
}
