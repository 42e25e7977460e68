import Foundation

/// What the `gcc -E -dI -dD` output of one translation unit says about the
/// files it read: the include graph (includes skipped by an include guard
/// resolved too), and, for the identifiers a caller asks about, which files
/// mention them, declare them (ordinary names, struct members, tags) or define
/// them as macros. Union compiles use these facts to show that the headers a
/// test does not include cannot change its outcome (see UnionCompiler).
struct PreprocessedUnit: Sendable {
    /// File paths by id. Id 0 is the main file.
    var paths: [String] = []
    /// Files each file includes.
    var edges: [Set<Int>] = []
    /// Files with an include directive that could not be resolved to a file.
    var unresolved: Set<Int> = []
    /// Files entered before the main file's own lines (`-include`).
    var prelude: Set<Int> = []
    /// Include directives of the main file: its line and the file entered (nil: unresolved).
    var mainIncludes: [(line: Int, file: Int?)] = []
    /// Identifier tokens of the main file after macro expansion, with their line,
    /// whether a `.` or `->` precedes them and whether a `(` follows.
    var mainTokens: [MainToken] = []

    struct MainToken: Sendable {
        var line: Int
        var name: String
        var afterDot: Bool
        var beforeParen: Bool
    }
    /// Facts about the identifiers of interest, by name.
    var facts: [String: Facts] = [:]

    struct Facts: Sendable {
        /// Files where the identifier appears at all (code or macro bodies).
        var mentioned: Set<Int> = []
        /// Files declaring it as a function, variable, typedef or enumerator.
        var ordinary: Set<Int> = []
        /// Files declaring it as an array object (`extern int a[];` may be completed elsewhere).
        var array: Set<Int> = []
        /// Files declaring a struct or union member of that name.
        var member: Set<Int> = []
        /// Files defining or undefining a macro of that name.
        var macro: Set<Int> = []
        /// Files defining a struct, union or enum with that tag.
        var tagDefined: Set<Int> = []
        /// Files declaring the tag at file scope without defining it.
        var tagDeclared: Set<Int> = []
    }

    static let mainFile = 0

    /// Parses preprocessor output. `interest` receives the main file's expanded
    /// identifiers and returns every identifier whose facts are wanted.
    static func parse(_ text: [UInt8], includeDirectories: [String],
                      interest: ([MainToken]) -> Set<String>) -> PreprocessedUnit {
        var unit = PreprocessedUnit()
        let lines = LineIndex(text)
        unit.scanStructure(text, lines: lines, includeDirectories: includeDirectories)
        let wanted = interest(unit.mainTokens)
        unit.scanDeclarations(text, lines: lines, wanted: wanted)
        return unit
    }

    /// Every file reachable from `roots` through the include graph, and whether an
    /// unresolved include was met on the way.
    func closure(from roots: [Int]) -> (files: Set<Int>, complete: Bool) {
        var seen = Set<Int>()
        var stack = roots
        var complete = true
        while let f = stack.popLast() {
            guard seen.insert(f).inserted else { continue }
            if unresolved.contains(f) { complete = false }
            stack.append(contentsOf: edges[f])
        }
        return (seen, complete)
    }

    // MARK: - Pass 1: line markers, include directives, main-file tokens

    private mutating func scanStructure(_ text: [UInt8], lines: LineIndex, includeDirectories: [String]) {
        var ids: [String: Int] = [:]
        func id(_ path: String) -> Int {
            if let i = ids[path] { return i }
            ids[path] = paths.count
            paths.append(path)
            edges.append([])
            return paths.count - 1
        }
        var current = -1
        var line = 0
        // An include directive waits for the marker that enters its file; anything
        // else first means the include was skipped (already included).
        var pending: (from: Int, line: Int, spelled: String, quoted: Bool, next: Bool)?
        var skipped: [(from: Int, line: Int, spelled: String, quoted: Bool, next: Bool)] = []
        var resolvedByName: [String: Int] = [:]

        text.withUnsafeBufferPointer { buf in
            for (start, end) in lines.ranges {
                let length = end - start
                if length > 0, buf[start] == UInt8(ascii: "#") {
                    if length > 2, buf[start + 1] == UInt8(ascii: " "), isDigit(buf[start + 2]) {
                        guard let marker = LineMarker(buf, start, end) else { continue }
                        let file = id(marker.path)
                        if marker.flags.contains(1) {
                            if let p = pending {
                                edges[p.from].insert(file)
                                if p.from == Self.mainFile { mainIncludes.append((p.line, file)) }
                                if !p.quoted && !p.next { resolvedByName[p.spelled] = file }
                                pending = nil
                            } else if current >= 0, paths[current].hasPrefix("<") {
                                prelude.insert(file)
                            }
                        }
                        current = file
                        line = marker.line
                        continue
                    }
                    if let directive = IncludeDirective(buf, start, end) {
                        if let p = pending { skipped.append(p) }
                        pending = (current, line, directive.spelled, directive.quoted, directive.next)
                        line += 1
                        continue
                    }
                }
                if length > 0, let p = pending, !isBlank(buf, start, end) {
                    skipped.append(p)
                    pending = nil
                }
                if current == Self.mainFile, length > 0, buf[start] != UInt8(ascii: "#") {
                    var tokenizer = Tokenizer(buf: buf, position: start, end: end)
                    var previous: Token?
                    while let token = tokenizer.next() {
                        if case .punct(UInt8(ascii: "(")) = token, case .identifier = previous, !mainTokens.isEmpty {
                            mainTokens[mainTokens.count - 1].beforeParen = true
                        }
                        if case .identifier(let s, let e) = token {
                            var afterDot = false
                            if case .punct(UInt8(ascii: "."))? = previous { afterDot = true }
                            mainTokens.append(MainToken(line: line, name: String(decoding: UnsafeBufferPointer(rebasing: buf[s..<e]), as: UTF8.self),
                                                        afterDot: afterDot, beforeParen: false))
                        }
                        previous = token
                    }
                }
                line += 1
            }
        }
        if let p = pending { skipped.append(p) }

        // Skipped includes: `<x>` resolves like any earlier `<x>` did; `"x"` first
        // beside its includer. Anything else stays unresolved (the closure is then unknown).
        func resolve(_ name: String) -> Int? {
            CompileRunner.directory(holding: name, in: includeDirectories).flatMap { ids[$0 + "/" + name] }
        }
        for s in skipped {
            var target: Int?
            if s.quoted, let slash = paths[s.from].lastIndex(of: "/") {
                let beside = String(paths[s.from][..<slash]) + "/" + s.spelled
                if let known = ids[beside] {
                    target = known
                } else if !FileManager.default.fileExists(atPath: beside) {
                    target = resolvedByName[s.spelled] ?? resolve(s.spelled)
                }
            } else if !s.next {
                target = resolvedByName[s.spelled] ?? resolve(s.spelled)
            }
            if let target {
                edges[s.from].insert(target)
            } else {
                unresolved.insert(s.from)
            }
            if s.from == Self.mainFile { mainIncludes.append((s.line, target)) }
        }
        mainIncludes.sort { $0.line < $1.line }
    }

    // MARK: - Pass 2: declarations and mentions in every file

    private mutating func scanDeclarations(_ text: [UInt8], lines: LineIndex, wanted: Set<String>) {
        let (table, names) = DeclarationParser.lookupTable(wanted.sorted())
        var found = [Facts](repeating: Facts(), count: names.count)
        var parser = DeclarationParser()
        var ids: [String: Int] = [:]
        for (i, p) in paths.enumerated() { ids[p] = i }
        var current = 0

        text.withUnsafeBufferPointer { buf in
            for (start, end) in lines.ranges {
                let length = end - start
                if length > 0, buf[start] == UInt8(ascii: "#") {
                    if length > 2, buf[start + 1] == UInt8(ascii: " "), isDigit(buf[start + 2]) {
                        if let marker = LineMarker(buf, start, end), let f = ids[marker.path] { current = f }
                        continue
                    }
                    // -dD: `#define NAME…` / `#undef NAME`: the name is (un)defined here, the body mentions.
                    var tokenizer = Tokenizer(buf: buf, position: start + 1, end: end)
                    guard case .identifier(let ds, let de)? = tokenizer.next() else { continue }
                    let directive = String(decoding: UnsafeBufferPointer(rebasing: buf[ds..<de]), as: UTF8.self)
                    guard directive == "define" || directive == "undef" else { continue }
                    var first = true
                    while let token = tokenizer.next() {
                        guard case .identifier(let s, let e) = token, let v = table.lookup(buf, s, e), v >= 0 else {
                            first = false
                            continue
                        }
                        if first { found[v].macro.insert(current) }
                        found[v].mentioned.insert(current)
                        first = false
                    }
                    continue
                }
                var tokenizer = Tokenizer(buf: buf, position: start, end: end)
                while let token = tokenizer.next() {
                    let piece = DeclarationParser.piece(token, in: buf, table: table)
                    if case .name(let v) = piece, v >= 0 { found[v].mentioned.insert(current) }
                    parser.feed(piece, file: current) { kind, name, file in
                        switch kind {
                        case .ordinary: found[name].ordinary.insert(file)
                        case .array: found[name].array.insert(file)
                        case .member: found[name].member.insert(file)
                        case .tagDefined: found[name].tagDefined.insert(file)
                        case .tagDeclared: found[name].tagDeclared.insert(file)
                        }
                    }
                }
            }
        }
        for (i, n) in names.enumerated() { facts[n] = found[i] }
    }
}

// MARK: - Lexing

private func isDigit(_ c: UInt8) -> Bool { c >= 48 && c <= 57 }
private func isIdentifierStart(_ c: UInt8) -> Bool { (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95 || c == 36 }
private func isIdentifierByte(_ c: UInt8) -> Bool { isIdentifierStart(c) || isDigit(c) }

private func isBlank(_ buf: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> Bool {
    for i in start..<end where buf[i] != 32 && buf[i] != 9 && buf[i] != 13 { return false }
    return true
}

/// Start and end offsets of every line.
struct LineIndex {
    var ranges: [(Int, Int)] = []
    init(_ text: [UInt8]) {
        ranges.reserveCapacity(text.count / 30)
        var start = 0
        text.withUnsafeBufferPointer { buf in
            for i in 0..<buf.count where buf[i] == 10 {
                ranges.append((start, i))
                start = i + 1
            }
        }
        if start < text.count { ranges.append((start, text.count)) }
    }
}

/// `# LINE "FILE" FLAGS…`
private struct LineMarker {
    var line: Int
    var path: String
    var flags: [Int]

    init?(_ buf: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) {
        var i = start + 2
        var n = 0
        while i < end, isDigit(buf[i]) {
            n = n * 10 + Int(buf[i] - 48)
            i += 1
        }
        guard i + 1 < end, buf[i] == 32, buf[i + 1] == 34 else { return nil }
        i += 2
        var path: [UInt8] = []
        while i < end, buf[i] != 34 {
            if buf[i] == 92, i + 1 < end { i += 1 }
            path.append(buf[i])
            i += 1
        }
        i += 1
        var flags: [Int] = []
        while i < end {
            if isDigit(buf[i]) { flags.append(Int(buf[i] - 48)) }
            i += 1
        }
        self.line = n
        self.path = String(decoding: path, as: UTF8.self)
        self.flags = flags
    }
}

/// `#include <x>`, `#include "x"` or `#include_next …` as -dI prints them.
private struct IncludeDirective {
    var spelled: String
    var quoted: Bool
    var next: Bool

    init?(_ buf: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) {
        let text = String(decoding: UnsafeBufferPointer(rebasing: buf[start..<end]), as: UTF8.self)
        let next: Bool
        let rest: Substring
        if text.hasPrefix("#include_next ") {
            next = true
            rest = text.dropFirst("#include_next ".count)
        } else if text.hasPrefix("#include ") {
            next = false
            rest = text.dropFirst("#include ".count)
        } else if text.hasPrefix("#import ") {
            next = false
            rest = text.dropFirst("#import ".count)
        } else {
            return nil
        }
        let trimmed = rest.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("<"), let close = trimmed.firstIndex(of: ">") {
            spelled = String(trimmed[trimmed.index(after: trimmed.startIndex)..<close])
            quoted = false
        } else if trimmed.hasPrefix("\""), let close = trimmed.dropFirst().firstIndex(of: "\"") {
            spelled = String(trimmed[trimmed.index(after: trimmed.startIndex)..<close])
            quoted = true
        } else {
            // A computed include (`#include MACRO`): only the marker that follows can name it.
            spelled = "\u{0}" + trimmed
            quoted = false
        }
        self.next = next
    }
}

enum Token {
    case identifier(Int, Int)
    /// One of `{ } ( ) [ ] ; , = : * .` — `->` is reported as `.`.
    case punct(UInt8)
    case other
}

/// C tokens of one line; strings, character constants and numbers are `.other`.
struct Tokenizer {
    let buf: UnsafeBufferPointer<UInt8>
    var position: Int
    let end: Int

    mutating func next() -> Token? {
        while position < end {
            let c = buf[position]
            if c == 32 || c == 9 || c == 13 {
                position += 1
                continue
            }
            if isIdentifierStart(c) {
                let s = position
                while position < end, isIdentifierByte(buf[position]) { position += 1 }
                // A prefixed string or character literal (L"…", u8'…') is not an identifier.
                if position < end, buf[position] == 34 || buf[position] == 39, position - s <= 2 {
                    skipQuoted()
                    return .other
                }
                return .identifier(s, position)
            }
            if isDigit(c) || (c == 46 && position + 1 < end && isDigit(buf[position + 1])) {
                while position < end {
                    let d = buf[position]
                    if (d == 43 || d == 45), position > 0, buf[position - 1] == 101 || buf[position - 1] == 69 || buf[position - 1] == 112 || buf[position - 1] == 80 {
                        position += 1
                    } else if isIdentifierByte(d) || d == 46 {
                        position += 1
                    } else {
                        break
                    }
                }
                return .other
            }
            if c == 34 || c == 39 {
                skipQuoted()
                return .other
            }
            position += 1
            switch c {
            case UInt8(ascii: "{"), UInt8(ascii: "}"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "["),
                 UInt8(ascii: "]"), UInt8(ascii: ";"), UInt8(ascii: ","), UInt8(ascii: "*"):
                return .punct(c)
            case UInt8(ascii: "="):
                if position < end, buf[position] == c { position += 1; return .other }
                return .punct(c)
            case UInt8(ascii: ":"):
                return .punct(c)
            case UInt8(ascii: "."):
                if position + 1 < end, buf[position] == 46, buf[position + 1] == 46 { position += 2; return .other }
                return .punct(c)
            case UInt8(ascii: "-"):
                if position < end, buf[position] == UInt8(ascii: ">") { position += 1; return .punct(UInt8(ascii: ".")) }
                if position < end, buf[position] == c || buf[position] == UInt8(ascii: "=") { position += 1 }
                return .other
            case UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "!"), UInt8(ascii: "+"), UInt8(ascii: "&"),
                 UInt8(ascii: "|"), UInt8(ascii: "^"), UInt8(ascii: "%"), UInt8(ascii: "/"):
                // Compound operators (`<=`, `!=`, `+=`, `<<=` …) must not leave a bare `=`.
                while position < end, buf[position] == c || buf[position] == UInt8(ascii: "=") { position += 1 }
                return .other
            default:
                return .other
            }
        }
        return nil
    }

    private mutating func skipQuoted() {
        let quote = buf[position]
        position += 1
        while position < end, buf[position] != quote {
            if buf[position] == 92 { position += 1 }
            position += 1
        }
        position = min(position + 1, end)
    }
}

/// The keywords the declaration reader must recognise (and never treats as names).
enum Keyword: String, CaseIterable {
    case `struct`, union, `enum`, `typedef`
    case attribute = "__attribute__", attribute2 = "__attribute", typeof1 = "typeof", typeof2 = "__typeof__", typeof3 = "__typeof"
    case asm1 = "asm", asm2 = "__asm__", asm3 = "__asm", staticAssert = "_Static_assert", alignas = "_Alignas"
    case alignof1 = "__alignof__", alignof2 = "_Alignof", sizeof, generic = "_Generic", atomic = "_Atomic"
    case const, volatile, restrict, restrict2 = "__restrict", restrict3 = "__restrict__", const2 = "__const", const3 = "__const__"
    case volatile2 = "__volatile__", volatile3 = "__volatile"
    case int, char, short, long, unsigned, signed, signed2 = "__signed__", float, double, void, bool = "_Bool", int128 = "__int128"
    case `static`, `extern`, inline, inline2 = "__inline__", inline3 = "__inline", register, auto, autoType = "__auto_type"
    case noreturn = "_Noreturn", threadLocal = "_Thread_local", threadLocal2 = "__thread", complex = "_Complex", imaginary = "_Imaginary"
    case `extension` = "__extension__", label = "__label__", real = "__real__", imag = "__imag__"
    case `return`, `if`, `else`, `for`, `while`, `do`, `switch`, `case`, `default`, `break`, `continue`, `goto`

    static let all = Keyword.allCases

    /// Keywords followed by a parenthesised group that declares nothing.
    var takesGroup: Bool {
        switch self {
        case .attribute, .attribute2, .typeof1, .typeof2, .typeof3, .asm1, .asm2, .asm3, .staticAssert, .alignas,
             .alignof1, .alignof2, .sizeof, .generic, .atomic:
            return true
        default:
            return false
        }
    }

    var isQualifier: Bool {
        switch self {
        case .const, .volatile, .restrict, .restrict2, .restrict3, .const2, .const3, .volatile2, .volatile3, .atomic:
            return true
        default:
            return false
        }
    }

    var isTag: Bool { self == .struct || self == .union || self == .enum }
}

// MARK: - Declarations

/// Reads declarations from a token stream well enough to say which names a file
/// declares. It over-approximates (a name it is unsure about counts as declared),
/// which only ever makes a union result rejected, never wrongly accepted.
struct DeclarationParser {
    enum Piece: Equatable {
        /// An identifier: its index among the names of interest, or -1.
        case name(Int)
        case keyword(Keyword)
        case punct(UInt8)
        case other
        /// A struct or enum body already read.
        case body
    }

    /// `array` comes with `ordinary` for an array object: another declaration may complete it.
    enum Kind { case ordinary, array, member, tagDefined, tagDeclared }

    /// A lookup of the keywords (negative values) and of `names` (their position in the
    /// returned list; a name that is a keyword stays a keyword).
    static func lookupTable(_ names: [String]) -> (table: NameTable, names: [String]) {
        var table = NameTable()
        for (i, k) in Keyword.all.enumerated() { table.insert(k.rawValue, value: -1 - i) }
        var kept: [String] = []
        for name in names where table.lookup(Array(name.utf8)) == nil {
            table.insert(name, value: kept.count)
            kept.append(name)
        }
        return (table, kept)
    }

    /// The piece a token is for the parser.
    static func piece(_ token: Token, in buf: UnsafeBufferPointer<UInt8>, table: NameTable) -> Piece {
        switch token {
        case .identifier(let s, let e):
            return table.lookup(buf, s, e).map { $0 < 0 ? .keyword(Keyword.all[-1 - $0]) : .name($0) } ?? .name(-1)
        case .punct(let c):
            return .punct(c)
        case .other:
            return .other
        }
    }

    private enum Level { case file, structBody, enumBody }
    private struct Item { var piece: Piece; var file: Int }

    private var statement: [Item] = []
    private var bodies: [(level: Level, saved: [Item])] = []
    /// Inside a function body or initializer: brace depth, and whether the statement goes on after it.
    private var skipDepth = 0
    private var continueAfterSkip = false
    private var level: Level { bodies.last?.level ?? .file }

    mutating func feed(_ piece: Piece, file: Int, report: (Kind, Int, Int) -> Void) {
        if skipDepth > 0 {
            if piece == .punct(UInt8(ascii: "{")) { skipDepth += 1 }
            if piece == .punct(UInt8(ascii: "}")) {
                skipDepth -= 1
                if skipDepth == 0 && !continueAfterSkip { statement.removeAll() }
            }
            return
        }
        switch piece {
        case .punct(UInt8(ascii: "{")):
            openBrace(file: file, report: report)
        case .punct(UInt8(ascii: "}")):
            finish(report: report)
            if let body = bodies.popLast() {
                statement = body.saved + [Item(piece: .body, file: file)]
            } else {
                statement.removeAll()
            }
        case .punct(UInt8(ascii: ";")):
            finish(report: report)
        case .punct(UInt8(ascii: ",")) where level == .enumBody && parenDepth == 0:
            finish(report: report)
        default:
            statement.append(Item(piece: piece, file: file))
        }
    }

    private var parenDepth: Int {
        var depth = 0
        for item in statement {
            if item.piece == .punct(UInt8(ascii: "(")) { depth += 1 }
            if item.piece == .punct(UInt8(ascii: ")")) { depth -= 1 }
        }
        return depth
    }

    private mutating func openBrace(file: Int, report: (Kind, Int, Int) -> Void) {
        let pieces = statement.map(\.piece)
        var depth = 0
        var hasAssignment = false
        for p in pieces {
            if p == .punct(UInt8(ascii: "(")) { depth += 1 }
            if p == .punct(UInt8(ascii: ")")) { depth -= 1 }
            if p == .punct(UInt8(ascii: "=")) && depth == 0 { hasAssignment = true }
        }
        if depth != 0 || hasAssignment || level == .enumBody {
            // An initializer (or something inside parentheses): the statement continues after it.
            skipDepth = 1
            continueAfterSkip = true
            return
        }
        // `struct [attributes] [tag] {` or `enum … {`: a body whose members are read.
        var i = pieces.count - 1
        var tag: Int?
        if i >= 0, case .name(let n) = pieces[i] {
            tag = n
            i -= 1
        }
        i = skipGroupsBackward(pieces, from: i)
        if i >= 0, case .keyword(let k) = pieces[i], k.isTag {
            if let tag, tag >= 0 { report(.tagDefined, tag, statement[pieces.count - 1].file) }
            let saved = Array(statement.prefix(tag == nil ? pieces.count : pieces.count - 1))
            statement.removeAll()
            bodies.append((k == .enum ? .enumBody : .structBody, saved))
            return
        }
        // Otherwise a function body: the declarator before it is a definition.
        finish(report: report)
        skipDepth = 1
        continueAfterSkip = false
    }

    /// Steps back over `__attribute__((…))`-like groups ending at index i.
    private func skipGroupsBackward(_ pieces: [Piece], from start: Int) -> Int {
        var i = start
        while i >= 0, pieces[i] == .punct(UInt8(ascii: ")")) {
            var depth = 0
            var j = i
            while j >= 0 {
                if pieces[j] == .punct(UInt8(ascii: ")")) { depth += 1 }
                if pieces[j] == .punct(UInt8(ascii: "(")) {
                    depth -= 1
                    if depth == 0 { break }
                }
                j -= 1
            }
            guard j > 0, case .keyword(let k) = pieces[j - 1], k.takesGroup else { return i }
            i = j - 2
        }
        return i
    }

    /// The statement so far is one declaration: report the names it declares.
    private mutating func finish(report: (Kind, Int, Int) -> Void) {
        defer { statement.removeAll() }
        let items = statement
        guard !items.isEmpty else { return }
        let kind: Kind = level == .structBody ? .member : .ordinary
        if level == .enumBody {
            for item in items {
                if case .name(let n) = item.piece {
                    if n >= 0 { report(.ordinary, n, item.file) }
                    break
                }
                if case .keyword = item.piece { continue }
                break
            }
            return
        }
        // Drop `__attribute__((…))`, `typeof(…)` and similar groups; note tag references.
        var kept: [Item] = []
        var i = 0
        while i < items.count {
            if case .keyword(let k) = items[i].piece, k.takesGroup, i + 1 < items.count, items[i + 1].piece == .punct(UInt8(ascii: "(")) {
                var depth = 0
                var j = i + 1
                while j < items.count {
                    if items[j].piece == .punct(UInt8(ascii: "(")) { depth += 1 }
                    if items[j].piece == .punct(UInt8(ascii: ")")) {
                        depth -= 1
                        if depth == 0 { break }
                    }
                    j += 1
                }
                i = j + 1
                continue
            }
            kept.append(items[i])
            i += 1
        }
        var depth = 0
        var bracket = 0
        var inInitializer = false
        var groupOpen: [Int] = []
        for (k, item) in kept.enumerated() {
            switch item.piece {
            case .punct(UInt8(ascii: "(")):
                depth += 1
                groupOpen.append(k)
            case .punct(UInt8(ascii: ")")):
                depth -= 1
                _ = groupOpen.popLast()
            case .punct(UInt8(ascii: "[")):
                bracket += 1
            case .punct(UInt8(ascii: "]")):
                bracket -= 1
            case .punct(UInt8(ascii: "=")) where depth == 0 && bracket == 0:
                inInitializer = true
            case .punct(UInt8(ascii: ":")) where depth == 0 && bracket == 0:
                inInitializer = true
            case .punct(UInt8(ascii: ",")) where depth == 0 && bracket == 0:
                inInitializer = false
            case .name(let n):
                if k > 0, case .keyword(let t) = kept[k - 1].piece, t.isTag {
                    // A tag named in a declaration at file scope (not in a parameter list).
                    if depth == 0 && n >= 0 { report(.tagDeclared, n, item.file) }
                    continue
                }
                guard n >= 0, !inInitializer, bracket == 0 else { continue }
                let next = k + 1 < kept.count ? kept[k + 1].piece : .punct(UInt8(ascii: ";"))
                if depth == 0 {
                    if [Piece.punct(UInt8(ascii: ";")), .punct(UInt8(ascii: ",")), .punct(UInt8(ascii: "=")),
                        .punct(UInt8(ascii: "[")), .punct(UInt8(ascii: "(")), .punct(UInt8(ascii: ":"))].contains(next) {
                        report(kind, n, item.file)
                        if kind == .ordinary && next == .punct(UInt8(ascii: "[")) { report(.array, n, item.file) }
                    }
                } else if next == .punct(UInt8(ascii: ")")) || next == .punct(UInt8(ascii: "[")) || next == .punct(UInt8(ascii: "(")),
                          let open = groupOpen.last {
                    // `(*name)`, `(* const name)`, `(name)`: a parenthesised declarator.
                    let between = kept[(open + 1)..<k].map(\.piece)
                    if between.allSatisfy({ p in
                        if p == .punct(UInt8(ascii: "*")) { return true }
                        if case .keyword(let q) = p, q.isQualifier { return true }
                        return false
                    }) {
                        report(kind, n, item.file)
                    }
                }
            default:
                break
            }
        }
    }
}
