/// One conftest definition from the catalog (see conftest/FORMAT.md).
public struct TestDefinition: Sendable, Equatable, Codable {
    public var name: String
    public var check: Check
    public var macros: [String]
    /// Header list, already expanded: `#include` lines and named blocks, in order.
    public var includes: [IncludeItem]
    public var code: String?
    public var probes: [Probe]
    public var results: [ResultRule]
    public var files: [AuxiliaryFile]
    public var value: String?
    public var releases: ReleaseSet?
    /// Fingerprints of the conftest.sh arms this definition was verified against
    /// (`Upstream:`); with a tree's conftest.sh, the definition applies only to these.
    public var upstream: [String] = []
    public var symversCandidates: [String]
    public var note: String
    /// Where the definition was read from, for messages.
    public var location: SourceLocation

    public enum Check: Sendable, Equatable, Codable {
        case function(name: String, arguments: String)
        case member(type: String, member: String)
        case compiles
        case fails
        case exportPresent(symbol: String)
        case exportGPL(symbol: String)
        /// Exported exactly as `EXPORT_SYMBOL` or `EXPORT_SYMBOL_GPL`, with no namespace.
        case exportPlain(symbol: String)
        /// A `Module.symvers` line of the symbol ends with its GPL export type: no namespace column.
        case exportGPLBare(symbol: String)
        case exportsAll(symbols: [String])
        case environment(variable: String)
        case environmentValue(variable: String)
        case rules

        /// The word used in listings.
        public var patternName: String {
            switch self {
            case .function: return "function"
            case .member: return "member"
            case .compiles: return "compiles"
            case .fails: return "fails"
            case .exportPresent: return "export-present"
            case .exportGPL: return "export-gpl"
            case .exportPlain: return "export-plain"
            case .exportGPLBare: return "export-gpl-bare"
            case .exportsAll: return "exports-all"
            case .environment: return "env"
            case .environmentValue: return "env-value"
            case .rules: return "rules"
            }
        }

        /// Whether the test needs the compiler at all.
        public var compiles: Bool {
            switch self {
            case .function, .member, .compiles, .fails, .rules: return true
            default: return false
            }
        }
    }

    public enum IncludeItem: Sendable, Equatable, Codable {
        case header(String, guardMacro: String?)
        case block(name: String, code: String)

        public var text: String {
            switch self {
            case .header(let path, nil):
                return "#include <\(path)>"
            case .header(let path, let guardMacro?):
                return "#if defined(\(guardMacro))\n#include <\(path)>\n#endif"
            case .block(_, let code):
                return code
            }
        }
    }

    public struct Probe: Sendable, Equatable, Codable {
        public var name: String
        public var code: String
    }

    public struct ResultRule: Sendable, Equatable, Codable {
        /// Empty means `*`.
        public var conditions: [Condition]
        public var lines: [String]

        public struct Condition: Sendable, Equatable, Codable {
            public var probe: String
            public var compiled: Bool
        }
    }

    public struct AuxiliaryFile: Sendable, Equatable, Codable {
        public var name: String
        public var content: String
    }
}

public struct SourceLocation: Sendable, Equatable, Codable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var description: String { "\(file):\(line)" }
}

/// A set of driver releases, written as a list of terms: `595.45.04`, `>=590`, `<590.48.01`.
/// A release matches when it satisfies every comparison term and, if plain
/// versions are listed, equals one of them; `|` separates alternatives.
public struct ReleaseSet: Sendable, Equatable, Codable, CustomStringConvertible {
    public var terms: [String]

    public init(terms: [String]) { self.terms = terms }

    /// The alternatives of a set written with `|` (`<515 | >=580`): a release is in the
    /// set when it is in one of them. A set without `|` is its own only alternative.
    var alternatives: [ReleaseSet] {
        guard terms.contains("|") else { return [self] }
        return terms.split(separator: "|", omittingEmptySubsequences: true).map { ReleaseSet(terms: Array($0)) }
    }

    public func contains(_ release: String) -> Bool {
        if terms.contains("|") { return alternatives.contains { $0.contains(release) } }
        var exact: [String] = []
        for term in terms {
            for op in [">=", "<=", ">", "<"] where term.hasPrefix(op) {
                let bound = String(term.dropFirst(op.count))
                let c = Self.compare(release, bound)
                let ok: Bool
                switch op {
                case ">=": ok = c >= 0
                case "<=": ok = c <= 0
                case ">": ok = c > 0
                default: ok = c < 0
                }
                if !ok { return false }
            }
            if !term.hasPrefix(">") && !term.hasPrefix("<") { exact.append(term) }
        }
        return exact.isEmpty || exact.contains(release)
    }

    /// Numeric comparison of dotted versions; missing components compare as 0.
    static func compare(_ a: String, _ b: String) -> Int {
        let x = a.split(separator: ".").map { Int($0) ?? 0 }
        let y = b.split(separator: ".").map { Int($0) ?? 0 }
        for i in 0..<max(x.count, y.count) {
            let l = i < x.count ? x[i] : 0
            let r = i < y.count ? y[i] : 0
            if l != r { return l < r ? -1 : 1 }
        }
        return 0
    }

    public var description: String { terms.joined(separator: " ") }

    /// Whether some release is in both sets (nil, no `Releases:`, is every release); the
    /// catalog refuses two definitions of one test that could both apply.
    public static func overlap(_ a: ReleaseSet?, _ b: ReleaseSet?) -> Bool {
        if let a, a.terms.contains("|") { return a.alternatives.contains { overlap($0, b) } }
        if let b, b.terms.contains("|") { return b.alternatives.contains { overlap(a, $0) } }
        let exact = (a?.exactVersions ?? []) + (b?.exactVersions ?? [])
        if !exact.isEmpty {
            return exact.contains { v in (a?.contains(v) ?? true) && (b?.contains(v) ?? true) }
        }
        let lower = [a?.bounds.lower, b?.bounds.lower].compactMap { $0 }.max { compareBound($0, $1, lower: true) < 0 }
        let upper = [a?.bounds.upper, b?.bounds.upper].compactMap { $0 }.min { compareBound($0, $1, lower: false) < 0 }
        guard let lower, let upper else { return true }
        let c = compare(lower.version, upper.version)
        // Dotted versions are dense: any gap between the bounds holds a release.
        return c < 0 || (c == 0 && lower.inclusive && upper.inclusive)
    }

    private var exactVersions: [String] { terms.filter { !$0.hasPrefix(">") && !$0.hasPrefix("<") } }

    private typealias Bound = (version: String, inclusive: Bool)

    /// The tightest lower and upper bound of the comparison terms.
    private var bounds: (lower: Bound?, upper: Bound?) {
        var lower: Bound?, upper: Bound?
        for term in terms {
            for op in [">=", "<=", ">", "<"] where term.hasPrefix(op) {
                let bound: Bound = (String(term.dropFirst(op.count)), op.count == 2)
                if op.hasPrefix(">") {
                    if lower.map({ Self.compareBound(bound, $0, lower: true) > 0 }) ?? true { lower = bound }
                } else if upper.map({ Self.compareBound(bound, $0, lower: false) < 0 }) ?? true {
                    upper = bound
                }
                break
            }
        }
        return (lower, upper)
    }

    /// Orders bounds by version; at one version an exclusive lower bound is the tighter
    /// (greater) one, an exclusive upper bound the tighter (smaller) one.
    private static func compareBound(_ x: Bound, _ y: Bound, lower: Bool) -> Int {
        let c = compare(x.version, y.version)
        if c != 0 || x.inclusive == y.inclusive { return c }
        return (x.inclusive ? -1 : 1) * (lower ? 1 : -1)
    }
}
