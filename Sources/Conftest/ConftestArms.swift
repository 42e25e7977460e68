import Crypto
import Foundation
import NVBuildSupport

/// The case arms of a tree's conftest.sh: the `NAME)` … `;;` items of the `case "$1" in`
/// inside its `compile_test` function, each with the fingerprint a catalog definition's
/// `Upstream:` field records (conftest/FORMAT.md defines the normalisation).
///
/// Only the script's structure is read (quotes, comments, nested `case`, function
/// bodies); nothing of it runs.
public struct ConftestArms: Sendable {
    public struct Arm: Sendable, Equatable {
        /// The item's patterns (`a|b)` gives two), as written.
        public var patterns: [String]
        /// 1-based line of the pattern.
        public var line: Int
        /// The normalised text the fingerprint is computed from.
        public var normalised: String
        public var fingerprint: String
    }

    public var path: String
    private var bytes: [UInt8]
    /// The script's functions other than compile_test: normalised text, and the functions each calls.
    private var helpers: [String: (text: String, calls: Set<String>)]
    /// The first item naming each literal pattern, and the items with glob patterns, for lookup.
    private var literal: [String: Int]
    private var globbed: [Int]
    /// The case items up to the default `*)` (items after it are never selected).
    private var entries: [(patterns: [String], line: Int, body: Range<Int>)]

    /// Every arm in script order, fingerprinted (the probe fingerprints only the arms of
    /// the tests it runs, through `arm(for:)`).
    public var arms: [Arm] { entries.map(arm) }

    /// Nil when the script has no `compile_test() { case "$1" in … esac }`: not shaped like
    /// NVIDIA's conftest.sh (the fixture's own script, other drivers), so there are no arms.
    public static func read(path: String) throws -> ConftestArms? {
        try parse(scriptBytes(path: path), path: path)
    }

    /// The bytes of the tree's conftest.sh, or an error naming it.
    static func scriptBytes(path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw UserError(.environment, "\(path): not readable; the tree's conftest.sh must be readable to match its tests to the catalog")
        }
        return Array(data)
    }

    /// The arm a test name selects, as the shell's `case` does: the first item with a
    /// matching pattern. Nil when only the default `*)` (or nothing) matches.
    public func arm(for test: String) -> Arm? {
        var index = literal[test]
        // A glob item before the literal one is what the shell selects.
        for i in globbed where i < (index ?? Int.max) && entries[i].patterns.contains(where: { ShellPattern.matches($0, test) }) {
            index = i
            break
        }
        return index.map { arm(entries[$0]) }
    }

    private func arm(_ entry: (patterns: [String], line: Int, body: Range<Int>)) -> Arm {
        var input = Self.normalise(bytes[entry.body])
        var called = Set<String>()
        var pending = Array(Self.identifiers(in: input).filter { helpers[$0] != nil })
        while let name = pending.popLast() {
            guard called.insert(name).inserted else { continue }
            pending += helpers[name]!.calls
        }
        for name in called.sorted() {
            input += "\n== \(name)()\n" + helpers[name]!.text
        }
        return Arm(patterns: entry.patterns, line: entry.line, normalised: input, fingerprint: Self.fingerprint(ofNormalised: input))
    }

    // MARK: - Structure

    static func parse(_ bytes: [UInt8], path: String) throws -> ConftestArms? {
        let functions = ShellScanner(bytes).topLevelFunctions()
        guard let compileTest = functions["compile_test"] else { return nil }
        var s = ShellScanner(bytes, range: compileTest)
        guard s.skipTo(word: "case"), s.nextWord() == "\"$1\"" || s.lastWord == "$1", s.nextWord() == "in" else { return nil }
        var entries: [(patterns: [String], line: Int, body: Range<Int>)] = []
        var counted = 0, line = 1
        func lineNumber(_ p: Int) -> Int {
            for i in counted..<p where bytes[i] == 0x0A { line += 1 }
            counted = max(counted, p)
            return line
        }
        while true {
            s.skipBlanks(newlines: true)
            guard !s.atEnd else {
                throw UserError(.environment, "\(path): compile_test's case has no closing 'esac'; not a conftest.sh nvbuild can read")
            }
            let patternLine = lineNumber(s.position)
            if s.peekWord() == "esac" { break }
            guard let patterns = s.casePatterns() else {
                throw UserError(.environment, "\(path):\(patternLine): a compile_test case item without ')'; not a conftest.sh nvbuild can read")
            }
            let body = s.armBody()
            // The default: the shell never reaches the items after it.
            if patterns.contains("*") { break }
            entries.append((patterns, patternLine, body))
        }
        var helpers: [String: (text: String, calls: Set<String>)] = [:]
        for (name, range) in functions where name != "compile_test" {
            let text = normalise(bytes[range])
            helpers[name] = (text, identifiers(in: text).filter { functions[$0] != nil && $0 != "compile_test" && $0 != name })
        }
        var literal: [String: Int] = [:]
        var globbed: [Int] = []
        for (i, entry) in entries.enumerated() {
            for pattern in entry.patterns {
                if pattern.contains(where: { "*?[\\\"'".contains($0) }) {
                    if globbed.last != i { globbed.append(i) }
                } else if literal[pattern] == nil {
                    literal[pattern] = i
                }
            }
        }
        return ConftestArms(path: path, bytes: bytes, helpers: helpers, literal: literal, globbed: globbed, entries: entries)
    }

    /// The shell-identifier words of a text (to find the script's functions an arm calls:
    /// their text is part of what the arm does, e.g. compile_check_conftest).
    static func identifiers(in text: String) -> Set<String> {
        var result = Set<String>()
        var start: Int?
        let utf8 = Array(text.utf8)
        for (i, c) in utf8.enumerated() {
            let word = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F
            if word, start == nil { start = i }
            if !word, let s = start {
                result.insert(String(decoding: utf8[s..<i], as: UTF8.self))
                start = nil
            }
        }
        if let s = start { result.insert(String(decoding: utf8[s...], as: UTF8.self)) }
        return result
    }

    // MARK: - Normalisation and fingerprint

    /// The first 16 hex digits of SHA-256 over the normalised text.
    static func fingerprint(ofNormalised text: String) -> String {
        String(SHA256.hash(data: Data(text.utf8)).hexString.prefix(16))
    }

    /// conftest/FORMAT.md, "Upstream fingerprints": shell comments dropped; outside
    /// quotes, runs of blanks become one space and blank lines go; every line loses its
    /// leading and trailing blanks (inside quotes too: the strings are C source or
    /// `echo ${LINE}` input, where indentation means nothing); everything else is kept.
    static func normalise(_ slice: ArraySlice<UInt8>) -> String {
        var out: [UInt8] = []
        var line: [UInt8] = []
        // `insideString`: the line break is inside a quoted string, where an empty
        // line is part of the string and kept.
        func endLine(insideString: Bool) {
            while let last = line.last, last == 0x20 || last == 0x09 { line.removeLast() }
            if !line.isEmpty || insideString {
                if !out.isEmpty { out.append(0x0A) }
                out += line
            }
            line = []
        }
        var s = ShellScanner(Array(slice))
        while !s.atEnd {
            let c = s.bytes[s.position]
            switch c {
            case 0x0A:
                s.position += 1
                endLine(insideString: false)
            case 0x20, 0x09:
                s.position += 1
                if !line.isEmpty && line.last != 0x20 { line.append(0x20) }
            case 0x23 where s.atWordStart:
                while !s.atEnd && s.bytes[s.position] != 0x0A { s.position += 1 }
            case 0x5C:
                // A backslash and what it escapes (a newline: a continuation, kept).
                line.append(c)
                s.position += 1
                if !s.atEnd {
                    if s.bytes[s.position] == 0x0A {
                        s.position += 1
                        endLine(insideString: false)
                    } else {
                        line.append(s.bytes[s.position])
                        s.position += 1
                    }
                }
            case _ where c == 0x22 || c == 0x27 || c == 0x60 || (c == 0x24 && s.position + 1 < s.bytes.count && (s.bytes[s.position + 1] == 0x28 || s.bytes[s.position + 1] == 0x7B)):
                // A string, `$(…)` or `${…}`: each physical line trimmed, its lines kept.
                let start = s.position
                if c == 0x24 { s.skipDollar() } else { s.skipQuoted() }
                var first = true
                for part in s.bytes[start..<min(s.position, s.bytes.count)].split(separator: 0x0A, omittingEmptySubsequences: false) {
                    var p = part[...]
                    if !first {
                        endLine(insideString: true)
                        while let f = p.first, f == 0x20 || f == 0x09 { p = p.dropFirst() }
                    }
                    line += p
                    first = false
                }
            default:
                line.append(c)
                s.position += 1
            }
        }
        endLine(insideString: false)
        return String(decoding: out, as: UTF8.self)
    }
}

/// A reader of the little shell structure conftest.sh's arms need: words, quotes,
/// comments, `$(…)`, `${…}`, nested `case … esac`.
struct ShellScanner {
    let bytes: [UInt8]
    var position: Int
    let end: Int
    private(set) var lastWord: String?

    init(_ bytes: [UInt8], range: Range<Int>? = nil) {
        self.bytes = bytes
        self.position = range?.lowerBound ?? 0
        self.end = range?.upperBound ?? bytes.count
    }

    var atEnd: Bool { position >= end }


    /// Whether a `#` here starts a comment (at the start of a word).
    var atWordStart: Bool {
        guard position > 0 else { return true }
        let p = bytes[position - 1]
        return p == 0x20 || p == 0x09 || p == 0x0A || p == 0x3B || p == 0x26 || p == 0x7C || p == 0x28 || p == 0x29
    }

    static func isBlank(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 }
    static func isOperator(_ c: UInt8) -> Bool { c == 0x3B || c == 0x26 || c == 0x7C || c == 0x28 || c == 0x29 || c == 0x3C || c == 0x3E || c == 0x0A }

    /// Blanks, comments and backslash-newlines (and newlines when asked).
    mutating func skipBlanks(newlines: Bool) {
        while !atEnd {
            let c = bytes[position]
            if Self.isBlank(c) || (newlines && c == 0x0A) {
                position += 1
            } else if c == 0x5C, position + 1 < end, bytes[position + 1] == 0x0A {
                position += 2
            } else if c == 0x23 && atWordStart {
                while !atEnd && bytes[position] != 0x0A { position += 1 }
            } else {
                return
            }
        }
    }

    /// Past a quoted string starting at the position (`"`, `'` or a backtick).
    mutating func skipQuoted() {
        let quote = bytes[position]
        position += 1
        while position < bytes.count {
            let c = bytes[position]
            if c == quote { position += 1; return }
            if quote != 0x27 && c == 0x5C { position += 2; continue }
            if quote == 0x22 && c == 0x24 && position + 1 < bytes.count && (bytes[position + 1] == 0x28 || bytes[position + 1] == 0x7B) {
                skipDollar()
                continue
            }
            if quote == 0x22 && c == 0x60 { skipQuoted(); continue }
            position += 1
        }
    }

    /// Past `$(…)`, `$((…))` or `${…}` starting at the position, quotes inside included.
    mutating func skipDollar() {
        let open = bytes[position + 1]
        let close: UInt8 = open == 0x28 ? 0x29 : 0x7D
        position += 2
        var depth = 1
        while position < bytes.count {
            let c = bytes[position]
            if c == 0x22 || c == 0x27 || c == 0x60 { skipQuoted(); continue }
            if c == 0x5C { position += 2; continue }
            if c == open { depth += 1 }
            if c == close {
                depth -= 1
                if depth == 0 { position += 1; return }
            }
            position += 1
        }
    }

    /// One shell word from the position (nil at an operator or the end).
    mutating func nextWord() -> String? {
        skipBlanks(newlines: true)
        let start = position
        while !atEnd {
            let c = bytes[position]
            if Self.isBlank(c) || Self.isOperator(c) { break }
            if c == 0x22 || c == 0x27 || c == 0x60 { skipQuoted(); continue }
            if c == 0x5C { position += 2; continue }
            if c == 0x24 && position + 1 < end && (bytes[position + 1] == 0x28 || bytes[position + 1] == 0x7B) { skipDollar(); continue }
            position += 1
        }
        lastWord = position > start ? String(decoding: bytes[start..<min(position, end)], as: UTF8.self) : nil
        return lastWord
    }

    mutating func peekWord() -> String? {
        var copy = self
        return copy.nextWord()
    }

    /// Moves past the next word equal to `word`, skipping quotes and comments.
    mutating func skipTo(word: String) -> Bool {
        while !atEnd {
            if nextWord() == word { return true }
            if lastWord == nil && !atEnd { position += 1 }
        }
        return false
    }

    /// `a|b)` (or `(a|b)`) at the position; nil when there is no `)`.
    mutating func casePatterns() -> [String]? {
        skipBlanks(newlines: true)
        if !atEnd && bytes[position] == 0x28 { position += 1 }
        var patterns: [String] = []
        while true {
            skipBlanks(newlines: false)
            guard let word = nextWord() else { return nil }
            patterns.append(word)
            skipBlanks(newlines: false)
            guard !atEnd else { return nil }
            if bytes[position] == 0x7C { position += 1; continue }
            if bytes[position] == 0x29 { position += 1; return patterns }
            return nil
        }
    }

    /// The arm from the position to its `;;` (or the `esac` that closes the case),
    /// past which the scanner then stands; `;;` of nested cases are skipped.
    mutating func armBody() -> Range<Int> {
        let start = position
        var depth = 0
        while !atEnd {
            let c = bytes[position]
            if c == 0x3B && position + 1 < end && bytes[position + 1] == 0x3B {
                if depth == 0 {
                    let body = start..<position
                    position += 2
                    return body
                }
                position += 2
                continue
            }
            if Self.isBlank(c) || (c == 0x23 && atWordStart) || (c == 0x5C && position + 1 < end && bytes[position + 1] == 0x0A) {
                skipBlanks(newlines: false)
                continue
            }
            if Self.isOperator(c) {
                position += 1
                continue
            }
            let wordStart = position
            let word = nextWord()
            if word == "case" { depth += 1 }
            if word == "esac" {
                if depth == 0 {
                    // The esac of the case itself: the last item had no ';;'.
                    position = wordStart
                    return start..<wordStart
                }
                depth -= 1
            }
            if position == wordStart { position += 1 }
        }
        return start..<position
    }

    /// Top-level `name() {` … `}` functions, body ranges by name: a function ends at
    /// the first `}` in column 0 outside quotes, as conftest.sh writes them.
    func topLevelFunctions() -> [String: Range<Int>] {
        var result: [String: Range<Int>] = [:]
        var s = self
        var openName: String?
        var bodyStart = 0
        s.position = 0
        while !s.atEnd {
            let p = s.position
            if p == 0 || s.bytes[p - 1] == 0x0A {
                let lineEnd = s.bytes[p...].firstIndex(of: 0x0A) ?? s.bytes.count
                if let name = openName {
                    if s.bytes[p] == 0x7D {
                        result[name] = bodyStart..<p
                        openName = nil
                    }
                } else if let name = Self.functionHeader(s.bytes[p..<lineEnd]) {
                    openName = name
                    bodyStart = min(lineEnd + 1, s.bytes.count)
                    s.position = bodyStart
                    continue
                }
            }
            let c = s.bytes[p]
            if c == 0x22 || c == 0x27 || c == 0x60 {
                s.skipQuoted()
            } else if c == 0x23 && s.atWordStart {
                while !s.atEnd && s.bytes[s.position] != 0x0A { s.position += 1 }
            } else if c == 0x5C {
                s.position += 2
            } else if c == 0x24 && p + 1 < s.bytes.count && (s.bytes[p + 1] == 0x28 || s.bytes[p + 1] == 0x7B) {
                s.skipDollar()
            } else {
                s.position += 1
            }
        }
        return result
    }

    /// `name() {` at the start of a line.
    static func functionHeader(_ line: ArraySlice<UInt8>) -> String? {
        let text = String(decoding: line, as: UTF8.self)
        guard let paren = text.range(of: "()") else { return nil }
        let name = text[..<paren.lowerBound]
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }),
              text[paren.upperBound...].trimmingCharacters(in: .whitespaces) == "{" else { return nil }
        return String(name)
    }
}

/// The shell's pattern matching for `case`: `*`, `?`, `[…]`, backslash escapes; quotes
/// in a pattern make their text literal.
enum ShellPattern {
    static func matches(_ pattern: String, _ text: String) -> Bool {
        var p: [(Character, literal: Bool)] = []
        var quote: Character?
        var escaped = false
        for c in pattern {
            if escaped { p.append((c, true)); escaped = false; continue }
            if c == "\\" && quote != "'" { escaped = true; continue }
            if let q = quote {
                if c == q { quote = nil } else { p.append((c, true)) }
                continue
            }
            if c == "\"" || c == "'" { quote = c; continue }
            p.append((c, false))
        }
        return match(p[...], Array(text)[...])
    }

    private static func match(_ p: ArraySlice<(Character, literal: Bool)>, _ t: ArraySlice<Character>) -> Bool {
        guard let (c, literal) = p.first else { return t.isEmpty }
        if !literal && c == "*" {
            var rest = t
            while true {
                if match(p.dropFirst(), rest) { return true }
                guard !rest.isEmpty else { return false }
                rest = rest.dropFirst()
            }
        }
        guard let first = t.first else { return false }
        if !literal && c == "?" { return match(p.dropFirst(), t.dropFirst()) }
        if !literal && c == "[", let close = p.dropFirst(2).firstIndex(where: { $0.0 == "]" && !$0.literal }) {
            var set = Array(p[(p.startIndex + 1)..<close].map(\.0))
            let negated = set.first == "!" || set.first == "^"
            if negated { set.removeFirst() }
            var hit = false
            var i = 0
            while i < set.count {
                if i + 2 < set.count && set[i + 1] == "-" {
                    if set[i] <= first && first <= set[i + 2] { hit = true }
                    i += 3
                } else {
                    if set[i] == first { hit = true }
                    i += 1
                }
            }
            return hit != negated && match(p[(close + 1)...], t.dropFirst())
        }
        return c == first && match(p.dropFirst(), t.dropFirst())
    }
}
