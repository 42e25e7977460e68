import Foundation
import NVBuildSupport

/// Something in a value that the shell would expand when DKMS sources dkms.conf.
public struct ShellExpansion: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// `$name` or `${name}` (also `${name[0]}`).
        case variable(String)
        /// `${...}` with an operator (`:-`, `/`, `#`, `!`, ...): can assign or nest commands.
        case parameterOperation(String)
        /// `$(...)`.
        case commandSubstitution
        /// `` `...` ``.
        case backtick
        /// `$((...))`.
        case arithmetic
        /// `$1`, `$$`, `$@`, ...
        case special(String)
    }

    public var kind: Kind
    /// The expansion exactly as written.
    public var text: String
    public var line: Int
}

/// One `NAME=value` or `NAME[i]=value` statement.
public struct DKMSAssignment: Sendable, Equatable {
    public var name: String
    /// The bracketed index as written (`nil` when there are no brackets).
    public var indexText: String?
    /// Literal numeric index; `nil` without brackets (bash: index 0) or when not a plain number.
    public var index: Int? {
        guard let indexText else { return 0 }
        return Int(indexText.trimmingCharacters(in: .whitespaces))
    }
    /// The value with quotes removed and expansions left as written.
    public var value: String
    /// The parts of the value that stay literal after sourcing (quoted or escaped),
    /// with each source-time expansion replaced by U+FFFC. DKMS later runs MAKE
    /// and CLEAN through `eval`, which expands this text a second time.
    public var literalValue: String
    public var expansions: [ShellExpansion]
    /// `NAME+=value`.
    public var appends: Bool
    /// `NAME=(a b c)`.
    public var isCompoundArray: Bool
    public var line: Int
}

/// A line the parser could not read as a plain assignment: a command, a
/// control structure, a redirection. Sourcing would execute it.
public struct DKMSStatement: Sendable, Equatable {
    public var text: String
    public var line: Int
    public var reason: String
}

/// dkms.conf read as data. Nothing in it is ever executed.
public struct DKMSConf: Sendable {
    public var path: String
    public var assignments: [DKMSAssignment]
    public var statements: [DKMSStatement]
    /// Lexical problems such as unterminated quotes.
    public var syntaxErrors: [DKMSStatement]

    public init(path: String, assignments: [DKMSAssignment], statements: [DKMSStatement], syntaxErrors: [DKMSStatement]) {
        self.path = path
        self.assignments = assignments
        self.statements = statements
        self.syntaxErrors = syntaxErrors
    }

    /// The last value assigned to `name` at `index` (what the shell would leave behind).
    public func value(_ name: String, index: Int = 0) -> String? {
        assignments.last { $0.name == name && $0.index == index }?.value
    }

    /// Index → value for an array directive, last assignment winning.
    public func array(_ name: String) -> [Int: String] {
        var result: [Int: String] = [:]
        for a in assignments where a.name == name {
            if let i = a.index { result[i] = a.value }
        }
        return result
    }

    public static func read(path: String) throws -> DKMSConf {
        parse(try TextFile.read(path, remedy: "check the path and its permissions"), path: path)
    }

    public static func parse(_ text: String, path: String = "dkms.conf") -> DKMSConf {
        var parser = DKMSConfParser(text: text)
        parser.run()
        return DKMSConf(path: path, assignments: parser.assignments, statements: parser.statements, syntaxErrors: parser.syntaxErrors)
    }
}

public struct DKMSError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A deliberately small reader for the shell subset dkms.conf files use:
/// comments, `NAME[=|+=]value` and `NAME[i]=value` with single, double and
/// unquoted text, line continuations. Anything else becomes a statement the
/// linter reports; it is never interpreted.
struct DKMSConfParser {
    let chars: [Character]
    var position = 0
    var line = 1
    var assignments: [DKMSAssignment] = []
    var statements: [DKMSStatement] = []
    var syntaxErrors: [DKMSStatement] = []

    init(text: String) {
        chars = Array(text)
    }

    static let placeholder: Character = "\u{FFFC}"

    private var atEnd: Bool { position >= chars.count }
    private func peek(_ offset: Int = 0) -> Character? {
        position + offset < chars.count ? chars[position + offset] : nil
    }

    private mutating func advance() -> Character {
        let c = chars[position]
        position += 1
        if c == "\n" { line += 1 }
        return c
    }

    mutating func run() {
        while !atEnd {
            skipBlanks()
            guard let c = peek() else { break }
            if c == "\n" || c == ";" {
                _ = advance()
                continue
            }
            if c == "#" {
                while let d = peek(), d != "\n" { _ = advance() }
                continue
            }
            statement()
        }
    }

    private mutating func skipBlanks() {
        while let c = peek() {
            if c == " " || c == "\t" || c == "\r" {
                _ = advance()
            } else if c == "\\", peek(1) == "\n" {
                _ = advance()
                _ = advance()
            } else {
                break
            }
        }
    }

    /// Reads one statement up to an unquoted newline or `;`. Assignment words
    /// become assignments; a statement with anything else is recorded whole.
    private mutating func statement() {
        let startLine = line
        let start = position
        var pending: [DKMSAssignment] = []
        var problem: String?
        while let c = peek(), c != "\n", c != ";" {
            if c == "#" && (position == start || chars[position - 1] == " " || chars[position - 1] == "\t") {
                while let d = peek(), d != "\n" { _ = advance() }
                break
            }
            if "&|<>(){}".contains(c) {
                problem = problem ?? "it uses the shell operator `\(c)`"
                _ = advance()
                continue
            }
            if problem == nil, let header = assignmentHeader() {
                position += header.length
                if let a = assignmentValue(name: header.name, index: header.index, appends: header.appends, line: startLine) {
                    pending.append(a)
                }
            } else {
                let word = readWord()
                if problem == nil { problem = "`\(word.value)` is a command, not a directive assignment" }
            }
            skipBlanks()
        }
        let text = String(chars[start..<position]).trimmingCharacters(in: .whitespaces)
        if let problem {
            statements.append(DKMSStatement(text: text, line: startLine, reason: problem))
        } else {
            assignments.append(contentsOf: pending)
        }
    }

    /// Matches `NAME=`, `NAME+=`, `NAME[index]=` at the current position.
    private func assignmentHeader() -> (name: String, index: String?, appends: Bool, length: Int)? {
        var i = position
        guard i < chars.count, chars[i] == "_" || (chars[i].isASCII && chars[i].isLetter) else { return nil }
        var name = ""
        while i < chars.count, chars[i] == "_" || (chars[i].isASCII && (chars[i].isLetter || chars[i].isNumber)) {
            name.append(chars[i])
            i += 1
        }
        var index: String?
        if i < chars.count, chars[i] == "[" {
            var j = i + 1
            var text = ""
            while j < chars.count, chars[j] != "]", chars[j] != "\n" {
                text.append(chars[j])
                j += 1
            }
            guard j < chars.count, chars[j] == "]" else { return nil }
            index = text
            i = j + 1
        }
        var appends = false
        if i < chars.count, chars[i] == "+" {
            appends = true
            i += 1
        }
        guard i < chars.count, chars[i] == "=" else { return nil }
        return (name, index, appends, i + 1 - position)
    }

    private mutating func assignmentValue(name: String, index: String?, appends: Bool, line: Int) -> DKMSAssignment? {
        if peek() == "(" {
            // Compound array: read the elements as words so their expansions are still seen.
            _ = advance()
            var words: [String] = []
            var literal = ""
            var expansions: [ShellExpansion] = []
            while true {
                while let c = peek(), c == " " || c == "\t" || c == "\n" || c == "\r" { _ = advance() }
                guard let c = peek() else {
                    syntaxErrors.append(DKMSStatement(text: "\(name)=(", line: line, reason: "the array's `(` is never closed"))
                    return nil
                }
                if c == ")" {
                    _ = advance()
                    break
                }
                let word = readWord()
                if word.value.isEmpty && word.consumed == 0 { _ = advance() }
                words.append(word.value)
                literal += word.literal + " "
                expansions += word.expansions
            }
            return DKMSAssignment(
                name: name, indexText: index, value: words.joined(separator: " "), literalValue: literal,
                expansions: expansions, appends: appends, isCompoundArray: true, line: line)
        }
        let word = readWord()
        return DKMSAssignment(
            name: name, indexText: index, value: word.value, literalValue: word.literal,
            expansions: word.expansions, appends: appends, isCompoundArray: false, line: line)
    }

    /// One shell word: unquoted, '...', "..." parts glued together.
    private mutating func readWord() -> (value: String, literal: String, expansions: [ShellExpansion], consumed: Int) {
        let start = position
        var value = ""
        var literal = ""
        var expansions: [ShellExpansion] = []
        while let c = peek() {
            if c == " " || c == "\t" || c == "\n" || c == "\r" || c == ";" || "&|<>()".contains(c) { break }
            if c == "'" {
                let open = line
                _ = advance()
                var closed = false
                while !atEnd {
                    let d = advance()
                    if d == "'" {
                        closed = true
                        break
                    }
                    value.append(d)
                    literal.append(d)
                }
                if !closed {
                    syntaxErrors.append(DKMSStatement(text: "'", line: open, reason: "a single quote opened here is never closed"))
                }
            } else if c == "\"" {
                let open = line
                _ = advance()
                var closed = false
                while let d = peek() {
                    if d == "\"" {
                        _ = advance()
                        closed = true
                        break
                    }
                    if d == "\\" {
                        _ = advance()
                        guard let e = peek() else { break }
                        _ = advance()
                        if e == "\n" { continue }
                        if "$`\"\\".contains(e) {
                            value.append(e)
                            literal.append(e)
                        } else {
                            value += "\\\(e)"
                            literal += "\\\(e)"
                        }
                        continue
                    }
                    if d == "$" || d == "`" {
                        if let x = expansion() {
                            expansions.append(x)
                            value += x.text
                            literal.append(Self.placeholder)
                            continue
                        }
                    }
                    value.append(advance())
                    literal.append(d)
                }
                if !closed {
                    syntaxErrors.append(DKMSStatement(text: "\"", line: open, reason: "a double quote opened here is never closed"))
                }
            } else if c == "\\" {
                _ = advance()
                if let e = peek() {
                    _ = advance()
                    if e != "\n" {
                        value.append(e)
                        literal.append(e)
                    }
                }
            } else if (c == "$" || c == "`"), let x = expansion() {
                expansions.append(x)
                value += x.text
                literal.append(Self.placeholder)
            } else {
                value.append(advance())
                literal.append(c)
            }
        }
        return (value, literal, expansions, position - start)
    }

    /// Reads an expansion starting at `$` or a backtick; nil for a lone `$`.
    private mutating func expansion() -> ShellExpansion? {
        let startLine = line
        let start = position
        if peek() == "`" {
            _ = advance()
            while let d = peek(), d != "`" {
                _ = advance()
                if d == "\\", !atEnd { _ = advance() }
            }
            if atEnd {
                syntaxErrors.append(DKMSStatement(text: "`", line: startLine, reason: "a backtick opened here is never closed"))
            } else {
                _ = advance()
            }
            return ShellExpansion(kind: .backtick, text: String(chars[start..<position]), line: startLine)
        }
        guard let next = peek(1) else { return nil }
        if next == "(" {
            let arithmetic = peek(2) == "("
            position += 1
            skipBalanced(open: "(", close: ")")
            let text = String(chars[start..<position])
            return ShellExpansion(kind: arithmetic ? .arithmetic : .commandSubstitution, text: text, line: startLine)
        }
        if next == "{" {
            position += 1
            skipBalanced(open: "{", close: "}")
            let text = String(chars[start..<position])
            let inner = String(text.dropFirst(2).dropLast())
            if let name = Self.plainParameterName(inner) {
                return ShellExpansion(kind: .variable(name), text: text, line: startLine)
            }
            return ShellExpansion(kind: .parameterOperation(inner), text: text, line: startLine)
        }
        if next == "_" || (next.isASCII && next.isLetter) {
            _ = advance()
            var name = ""
            while let d = peek(), d == "_" || (d.isASCII && (d.isLetter || d.isNumber)) {
                name.append(advance())
            }
            return ShellExpansion(kind: .variable(name), text: "$" + name, line: startLine)
        }
        if next.isNumber || "@*#?$!-".contains(next) {
            position += 2
            return ShellExpansion(kind: .special(String(next)), text: "$\(next)", line: startLine)
        }
        return nil
    }

    /// Skips from an opening bracket to its match, stepping over quoted text.
    private mutating func skipBalanced(open: Character, close: Character) {
        var depth = 0
        let startLine = line
        while let c = peek() {
            _ = advance()
            if c == "\\" {
                if !atEnd { _ = advance() }
            } else if c == "'" {
                while let d = peek(), d != "'" { _ = advance() }
                if !atEnd { _ = advance() }
            } else if c == open {
                depth += 1
            } else if c == close {
                depth -= 1
                if depth == 0 { return }
            }
        }
        syntaxErrors.append(DKMSStatement(text: String(open), line: startLine, reason: "`\(open)` opened here is never closed"))
    }

    /// `name` or `name[digits]` inside `${...}`.
    static func plainParameterName(_ inner: String) -> String? {
        var name = Substring(inner)
        if let bracket = name.firstIndex(of: "["), name.hasSuffix("]") {
            let index = name[name.index(after: bracket)..<name.index(before: name.endIndex)]
            guard !index.isEmpty, index.allSatisfy(\.isNumber) else { return nil }
            name = name[..<bracket]
        }
        guard let first = name.first, first == "_" || (first.isASCII && first.isLetter),
            name.allSatisfy({ $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) })
        else { return nil }
        return String(name)
    }
}
