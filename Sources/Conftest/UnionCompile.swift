import Foundation
import NVBuildSupport

/// Compiles many probes in one translation unit that includes the union of
/// their include lists, and keeps a probe's outcome only when the unit's
/// preprocessor output shows that the headers the probe does not include
/// itself cannot change it.
///
/// A probe's isolated compile sees the files reachable from its own includes
/// (its closure C, taken from the union's include graph, guard-skipped includes
/// resolved). The union adds the other files E. The outcome can only differ if
/// something in E gives meaning to a name the probe uses (before or after macro
/// expansion). So for every such name x, the union outcome is kept only if
///  - no file of C mentions x and no file of E mentions it either (x is
///    unknown to both compiles), or
///  - files of C mention x and E neither defines a macro x, declares a member
///    x (where the probe uses x as a member), declares an array x, declares an
///    ordinary x or tag x that C does not declare, nor defines a tag x that C
///    leaves undefined.
///    In `offsetof(struct S, m)` with S defined in C only, m needs no more.
/// Probes in one unit never share a name one of them defines; errors must be
/// attributable to one probe's lines; every probe's checkpoint must be reached;
/// and probes without errors are compiled again without the failing ones until
/// a unit compiles cleanly. Whatever is not shown this way is left to the caller,
/// which compiles it on its own. What this relies on and does not check: a header
/// of C preprocesses the same way whether or not files of E came before it, and in
/// whatever order the union first includes it (kernel headers are self-contained
/// and guarded; the parity harness checks the results on real trees and kernels).
struct UnionCompiler: Sendable {
    var runner: CompileRunner
    var preamble: String
    /// Where `#include <x>` looks, in the compiler's order.
    var includeDirectories: [String]
    /// The compiler's own header directories (-isystem).
    var systemDirectories: Set<String>
    /// Upper bound on compile rounds per translation unit.
    var maxRounds = 6

    /// What became of one unit: an outcome shown by a union, or left to the caller.
    enum Event: Sendable {
        case kept(Int, UnitResult)
        case leftOver(Int)
    }

    /// Reports every unit exactly once, as soon as its fate is known, so that units left
    /// over can be compiled while union rounds still run.
    func events(_ units: [CompileUnit]) -> AsyncThrowingStream<Event, Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    try await run(units) { continuation.yield($0) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Outcomes for the units it could show, by index into `units`.
    func compile(_ units: [CompileUnit]) async throws -> [Int: UnitResult] {
        var kept: [Int: UnitResult] = [:]
        for try await event in events(units) {
            if case .kept(let i, let r) = event { kept[i] = r }
        }
        return kept
    }

    private func run(_ units: [CompileUnit], report: @escaping @Sendable (Event) -> Void) async throws {
        let shapes = units.map { RawShape($0.body) }
        // Assign units to translation units so that no two in one share a name either defines,
        // and headers of the compiler's own (stdint.h) never meet the kernel's, whose types they redefine.
        var plans: [[Int]] = []
        var planNames: [(defined: Set<String>, used: Set<String>, tests: Set<String>, compilerHeaders: Bool)] = []
        for (i, u) in units.enumerated() {
            guard u.files.isEmpty, let compilerHeaders = includeKind(u.includes) else {
                report(.leftOver(i))
                continue
            }
            var defined = shapes[i].defined
            if case .call(let function) = u.shape { defined.insert(function) }  // an implicit declaration, when undeclared
            let used = shapes[i].identifiers
            if let p = planNames.indices.first(where: { p in
                planNames[p].compilerHeaders == compilerHeaders && !planNames[p].tests.contains(u.test)
                    && planNames[p].defined.isDisjoint(with: used) && defined.isDisjoint(with: planNames[p].used)
            }) {
                plans[p].append(i)
                planNames[p].defined.formUnion(defined)
                planNames[p].used.formUnion(used)
                planNames[p].tests.insert(u.test)
            } else {
                plans.append([i])
                planNames.append((defined, used, [u.test], compilerHeaders))
            }
        }
        for plan in plans where plan.count == 1 { report(.leftOver(plan[0])) }
        // Largest first: they are the longest chains of rounds.
        let multi = plans.filter { $0.count > 1 }.sorted { $0.count > $1.count }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (n, plan) in multi.enumerated() {
                group.addTask {
                    try await compileUnion(plan, units: units, shapes: shapes, id: "union\(n)", report: report)
                }
            }
            try await group.waitForAll()
        }
    }

    /// Whether the includes the text makes outside `#if` blocks take a header from the
    /// compiler's own directories; nil when one of them does not exist (it would stop the
    /// whole union unit).
    func includeKind(_ includes: String) -> Bool? {
        var depth = 0
        var compilerHeaders = false
        for raw in includes.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#if") { depth += 1 }
            if line.hasPrefix("#endif") { depth -= 1 }
            guard depth == 0, line.hasPrefix("#include"), let open = line.firstIndex(where: { $0 == "<" || $0 == "\"" }) else { continue }
            let name = String(line[line.index(after: open)...].prefix { $0 != ">" && $0 != "\"" })
            guard let dir = CompileRunner.directory(holding: name, in: includeDirectories) else { return nil }
            if systemDirectories.contains(dir) { compilerHeaders = true }
        }
        return compilerHeaders
    }

    // MARK: - One translation unit

    private struct Layout {
        var source: String
        var preambleLines: ClosedRange<Int>
        /// Lines of each distinct include text (chunk), in order of first use.
        var chunkLines: [ClosedRange<Int>]
        /// For each member, its chunk and its body's lines.
        var members: [Int]
        var memberChunk: [Int]
        var bodyLines: [ClosedRange<Int>]
    }

    private func layout(_ members: [Int], units: [CompileUnit]) -> Layout {
        var chunks: [String] = []
        var chunkOf: [Int] = []
        for i in members {
            let text = units[i].includes
            if let c = chunks.firstIndex(of: text) {
                chunkOf.append(c)
            } else {
                chunkOf.append(chunks.count)
                chunks.append(text)
            }
        }
        var source = preamble
        func lineCount(_ s: String) -> Int { s.reduce(0) { $1 == "\n" ? $0 + 1 : $0 } }
        var line = lineCount(source) + 1
        let preambleLines = 1...max(1, line - 1)
        var chunkLines: [ClosedRange<Int>] = []
        for chunk in chunks {
            let text = chunk.isEmpty ? "\n" : chunk + "\n"
            let n = lineCount(text)
            chunkLines.append(line...(line + n - 1))
            source += text
            line += n
        }
        var bodyLines: [ClosedRange<Int>] = []
        for (k, i) in members.enumerated() {
            let text = units[i].body + "\n" + "static void \(Self.sentinel(k))_fn(void) { int \(Self.sentinel(k)); }\n"
            let n = lineCount(text)
            bodyLines.append(line...(line + n - 1))
            source += text
            line += n
        }
        return Layout(source: source, preambleLines: preambleLines, chunkLines: chunkLines,
                      members: members, memberChunk: chunkOf, bodyLines: bodyLines)
    }

    private func compileUnion(_ members: [Int], units: [CompileUnit], shapes: [RawShape], id: String,
                              report: @Sendable (Event) -> Void) async throws {
        var active = members
        // Round one, with the preprocessor analysis of the same source alongside. Headers that
        // cannot be combined with the others take their units out, and the round starts again.
        var attempt = 0
        while true {
            attempt += 1
            guard active.count > 1 else {
                active.forEach { report(.leftOver($0)) }
                return
            }
            let current = layout(active, units: units)
            let wanted = Set(active.flatMap { shapes[$0].identifiers })
            let analysisID = "\(id)-\(attempt)"
            async let analysis = analyze(current, wanted: wanted, id: analysisID)
            let r = try await runner.compile(id: "\(id)-\(attempt)", source: current.source, files: [])
            let verdict = Self.attribute(r.diagnostics, layout: current)
            guard case .units(let failing, let doubtful, let reached) = verdict else {
                guard case .headerProblem(let chunk?) = verdict, attempt < 4 else {
                    active.forEach { report(.leftOver($0)) }
                    return
                }
                for (k, i) in active.enumerated() where current.memberChunk[k] == chunk { report(.leftOver(i)) }
                active = active.enumerated().filter { current.memberChunk[$0.offset] != chunk }.map(\.element)
                continue
            }
            guard let facts = await analysis else {
                active.forEach { report(.leftOver($0)) }
                return
            }
            // Only members whose outcome the analysis shows go on; the round then settles them
            // like every later round.
            let proofs = provable(layout: current, facts: facts, units: units, shapes: shapes)
            var dependencies: [Int: [String]] = [:]
            for (k, i) in active.enumerated() { dependencies[i] = proofs[k] }
            let next = settle(compiled: r.compiled, diagnostics: r.diagnostics, layout: current, failing: failing, doubtful: doubtful, reached: reached,
                              dependencies: dependencies, report: report)
            try await laterRounds(next, dependencies: dependencies, units: units, id: id, report: report)
            return
        }
    }

    /// Units without errors in a failed round: errors only code generation reports are
    /// not seen while others stop the compile, so they go again without the failing ones
    /// until a round compiles cleanly.
    private func laterRounds(_ start: [Int], dependencies: [Int: [String]], units: [CompileUnit], id: String,
                             report: @Sendable (Event) -> Void) async throws {
        var active = start
        for round in 2...maxRounds {
            guard !active.isEmpty else { return }
            let current = layout(active, units: units)
            let r = try await runner.compile(id: "\(id)-r\(round)", source: current.source, files: [])
            guard case .units(let failing, let doubtful, let reached) = Self.attribute(r.diagnostics, layout: current) else { break }
            active = settle(compiled: r.compiled, diagnostics: r.diagnostics, layout: current, failing: failing, doubtful: doubtful, reached: reached,
                            dependencies: dependencies, report: report)
        }
        active.forEach { report(.leftOver($0)) }
    }

    /// Reports what one round shows for its members and returns those to compile again.
    /// A member without a proof (no entry in `dependencies`), with errors that touch other
    /// members or whose checkpoint was not reached is left over; a member with errors of
    /// its own failed; when the round had no error anywhere, every member compiled (and
    /// if the object is missing nonetheless, something failed unseen: all are left over).
    private func settle(compiled: Bool, diagnostics stderr: String, layout: Layout, failing: [Int: String], doubtful: Set<Int>, reached: Set<Int>, dependencies: [Int: [String]],
                        report: @Sendable (Event) -> Void) -> [Int] {
        let clean = failing.isEmpty && doubtful.isEmpty && reached.count == layout.members.count
        var next: [Int] = []
        for (k, i) in layout.members.enumerated() {
            guard let deps = dependencies[i] else {
                report(.leftOver(i))
                continue
            }
            if clean {
                report(compiled
                    ? .kept(i, UnitResult(compiled: true, diagnostics: Self.diagnostics(stderr, in: layout.bodyLines[k]),
                                          dependencies: deps, fromUnion: true))
                    : .leftOver(i))
            } else if doubtful.contains(k) || !reached.contains(k) {
                report(.leftOver(i))
            } else if let diagnostics = failing[k] {
                report(.kept(i, UnitResult(compiled: false, diagnostics: diagnostics, dependencies: deps, fromUnion: true)))
            } else {
                next.append(i)
            }
        }
        return clean ? [] : next
    }

    private func analyze(_ layout: Layout, wanted: Set<String>, id: String) async -> PreprocessedUnit? {
        guard let text = try? await runner.preprocess(id: "\(id)-analysis", source: layout.source) else { return nil }
        return PreprocessedUnit.parse(text, includeDirectories: includeDirectories) { tokens in
            wanted.union(tokens.map(\.name))
        }
    }

    // MARK: - Verification

    /// For each member position whose outcome the union shows, the files its isolated
    /// compile would read (its own include closure).
    private func provable(layout: Layout, facts: PreprocessedUnit, units: [CompileUnit], shapes: [RawShape]) -> [Int: [String]] {
        let headerFiles = Set(facts.paths.indices.filter { $0 != PreprocessedUnit.mainFile && !facts.paths[$0].hasPrefix("<") })
        // Names each member uses after expansion, and calls to functions no header declares
        // (implicit declarations last for the rest of the unit).
        var expanded: [[PreprocessedUnit.MainToken]] = Array(repeating: [], count: layout.members.count)
        for t in facts.mainTokens {
            if let k = layout.bodyLines.firstIndex(where: { $0.contains(t.line) }) { expanded[k].append(t) }
        }
        func declaredByHeaders(_ x: String) -> Bool {
            guard let f = facts.facts[x] else { return false }
            return !f.ordinary.subtracting([PreprocessedUnit.mainFile]).isEmpty || !f.macro.isEmpty
        }
        var claimed: [Set<String>] = []
        var results: [Int: [String]] = [:]
        for (k, i) in layout.members.enumerated() {
            let shape = shapes[i]
            var names = shape.identifiers
            var memberNames = shape.memberRefs
            var implicitCalls = Set<String>()
            var offsetofUsed = false
            for t in expanded[k] {
                names.insert(t.name)
                if t.afterDot { memberNames.insert(t.name) }
                if t.name == "__builtin_offsetof" { offsetofUsed = true }
                if t.beforeParen && !t.afterDot && !Self.exempt(t.name) && !declaredByHeaders(t.name) && !shape.locals.contains(t.name) {
                    implicitCalls.insert(t.name)
                }
            }
            let clash = claimed.contains { !$0.isDisjoint(with: names) }
            claimed.append(shape.defined.union(implicitCalls))
            guard !clash else { continue }

            let roots = facts.mainIncludes.filter { layout.preambleLines.contains($0.line) || layout.chunkLines[layout.memberChunk[k]].contains($0.line) }
            guard roots.allSatisfy({ $0.file != nil }) else { continue }
            let (reach, complete) = facts.closure(from: roots.compactMap(\.file) + Array(facts.prelude))
            guard complete else { continue }
            let own = reach.intersection(headerFiles)
            let extra = headerFiles.subtracting(own)
            // offsetof(struct S, m) looks m up in S's definition only: when that is among the
            // probe's own files, other structs with a member m do not matter.
            var offsetof: (type: String, member: String)?
            if case .offsetof(let type, let member) = units[i].shape { offsetof = (type, String(member.prefix { $0 != "." && $0 != "[" })) }
            var proven = true
            for x in names where !Self.exempt(x) {
                if shape.locals.contains(x) && !memberNames.contains(x) { continue }
                guard let f = facts.facts[x] else {
                    proven = false
                    break
                }
                if x == offsetof?.member, let type = offsetof?.type, let tag = Self.tag(of: type),
                   let t = facts.facts[tag], !t.tagDefined.isEmpty, t.tagDefined.isSubset(of: own) {
                    if !f.macro.isDisjoint(with: extra) {
                        proven = false
                        break
                    }
                    continue
                }
                // In other code, a name inside offsetof(…) may be a member designator.
                let memberSensitive = memberNames.contains(x) || (offsetofUsed && offsetof == nil)
                if f.mentioned.isDisjoint(with: own) {
                    if !f.mentioned.isDisjoint(with: extra) { proven = false }
                } else if !f.macro.isDisjoint(with: extra)
                    || (memberSensitive && !f.member.isDisjoint(with: extra))
                    || (!f.ordinary.isDisjoint(with: extra) && f.ordinary.isDisjoint(with: own))
                    || !f.array.isDisjoint(with: extra)
                    || (!f.tagDefined.isDisjoint(with: extra) && f.tagDefined.isDisjoint(with: own))
                    || (!f.tagDeclared.isDisjoint(with: extra) && f.tagDeclared.union(f.tagDefined).isDisjoint(with: own)) {
                    proven = false
                }
                if !proven { break }
            }
            guard proven else { continue }
            results[k] = own.map { facts.paths[$0] }.sorted()
        }
        return results
    }

    /// The tag of `struct S` / `union S`.
    static func tag(of type: String) -> String? {
        let words = type.split(separator: " ")
        guard words.count == 2, words[0] == "struct" || words[0] == "union" else { return nil }
        return String(words[1])
    }

    /// Names that carry no declaration a header could supply.
    static func exempt(_ name: String) -> Bool {
        name.hasPrefix("__builtin_") || name.hasPrefix("nvbuild_checkpoint_") || Keyword(rawValue: name) != nil
            || name == "defined"
    }

    // MARK: - Attribution

    static func sentinel(_ k: Int) -> String { "nvbuild_checkpoint_\(k)" }

    /// The conftest.c line a diagnostic line points at.
    static func conftestLine(_ line: String) -> Int? {
        guard let r = line.range(of: "conftest.c:") else { return nil }
        return Int(line[r.upperBound...].prefix { $0.isNumber })
    }

    /// The member whose checkpoint ("unused variable nvbuild_checkpoint_K") this line reports.
    static func checkpoint(in line: String) -> Int? {
        guard line.contains("unused variable"), let r = line.range(of: "nvbuild_checkpoint_") else { return nil }
        let digits = line[r.upperBound...].prefix { $0.isNumber }
        guard !digits.isEmpty, !line[r.upperBound...].dropFirst(digits.count).hasPrefix("_") else { return nil }
        return Int(digits)
    }

    /// The diagnostics that concern one member's lines (for explain and the cache).
    static func diagnostics(_ stderr: String, in range: ClosedRange<Int>) -> String {
        stderr.split(separator: "\n").filter { line in
            guard let n = conftestLine(String(line)) else { return false }
            return range.contains(n) && !line.contains("nvbuild_checkpoint_")
        }.joined(separator: "\n")
    }

    enum Attribution {
        /// Errors by member position, members whose errors also touch other members, members whose checkpoint was reached.
        case units(failing: [Int: String], doubtful: Set<Int>, reached: Set<Int>)
        /// An error that belongs to the headers; the chunk whose include led to it, when known.
        case headerProblem(chunk: Int?)
    }

    private static func attribute(_ stderr: String, layout: Layout) -> Attribution {
        let lines = stderr.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var failing: [Int: [String]] = [:]
        var doubtful = Set<Int>()
        var reached = Set<Int>()
        var context: [Int] = []
        var block: (lines: [String], main: [Int], included: [Int], fatal: Bool)?
        var blocks: [(lines: [String], main: [Int], included: [Int], fatal: Bool)] = []
        for line in lines {
            if let k = Self.checkpoint(in: line) { reached.insert(k) }
            if line.hasPrefix("In file included from ") || line.hasPrefix("                 from ") {
                if let n = Self.conftestLine(line) { context.append(n) }
                continue
            }
            let isError = line.contains(": error: ") || line.contains(": fatal error: ")
            let isNote = line.contains(": note: ")
            if isError {
                if let b = block { blocks.append(b) }
                block = ([line], [], context, line.contains(": fatal error: "))
                if line.hasPrefix("conftest.c:"), let n = Self.conftestLine(line) { block!.main.append(n) }
            } else if isNote, block != nil {
                block!.lines.append(line)
                block!.included.append(contentsOf: context)
                if line.hasPrefix("conftest.c:"), let n = Self.conftestLine(line) { block!.main.append(n) }
            } else if line.contains(": warning: ") {
                if let b = block { blocks.append(b) }
                block = nil
            } else if block != nil, line.hasPrefix(" ") {
                block!.lines.append(line)
            }
            if isError || isNote || line.contains(": warning: ") { context = [] }
        }
        if let b = block { blocks.append(b) }

        for b in blocks {
            // A probe that leaves a brace open swallows the ones after it: nothing can be attributed.
            if b.lines.contains(where: { $0.contains("at end of input") }) { return .headerProblem(chunk: nil) }
            let owners = Set(b.main.compactMap { n in layout.bodyLines.firstIndex { $0.contains(n) } })
            if owners.count == 1, !b.fatal {
                failing[owners.first!, default: []].append(contentsOf: b.lines)
            } else if owners.count > 1 {
                doubtful.formUnion(owners)
            } else {
                let chunk = (b.included + b.main).lazy.compactMap { n in layout.chunkLines.firstIndex { $0.contains(n) } }.first
                return .headerProblem(chunk: chunk)
            }
        }
        return .units(failing: failing.mapValues { $0.joined(separator: "\n") }, doubtful: doubtful, reached: reached)
    }
}

/// What a probe's own text (before preprocessing) names and defines.
struct RawShape: Sendable {
    var identifiers = Set<String>()
    /// Names it defines at file scope (functions, variables).
    var defined = Set<String>()
    /// Parameters and local variables: they shadow anything a header declares.
    var locals = Set<String>()
    /// Names used after `.` or `->`.
    var memberRefs = Set<String>()

    init(_ text: String) {
        let bytes = Array(text.utf8)
        var tokens: [(Token, String?)] = []
        bytes.withUnsafeBufferPointer { buf in
            var tokenizer = Tokenizer(buf: buf, position: 0, end: buf.count)
            while let t = tokenizer.next() {
                if case .identifier(let s, let e) = t {
                    tokens.append((t, String(decoding: UnsafeBufferPointer(rebasing: buf[s..<e]), as: UTF8.self)))
                } else {
                    tokens.append((t, nil))
                }
            }
        }
        func punct(_ k: Int) -> UInt8? {
            guard k >= 0, k < tokens.count, case .punct(let c) = tokens[k].0 else { return nil }
            return c
        }
        var braces = 0
        var parens = 0
        var initializer = false
        var parameterListDepth: Int?
        for (k, (_, name)) in tokens.enumerated() {
            switch punct(k) {
            case UInt8(ascii: "{"): braces += 1
            case UInt8(ascii: "}"): braces -= 1
            case UInt8(ascii: "("): parens += 1
            case UInt8(ascii: ")"):
                parens -= 1
                if parens == 0 { parameterListDepth = nil }
            case UInt8(ascii: "="): if braces == 0 && parens == 0 { initializer = true }
            case UInt8(ascii: ";"), UInt8(ascii: ","): if parens == 0 { initializer = false }
            default: break
            }
            guard let name else { continue }
            identifiers.insert(name)
            let next = punct(k + 1)
            let previous = punct(k - 1)
            if previous == UInt8(ascii: ".") {
                memberRefs.insert(name)
                continue
            }
            let previousIsType: Bool = {
                if previous == UInt8(ascii: "*") { return true }
                guard k > 0, let p = tokens[k - 1].1 else { return false }
                if let kw = Keyword(rawValue: p) { return !kw.isTag && kw != .return && kw != .sizeof && kw != .case && kw != .goto }
                return true
            }()
            if braces == 0 && parens == 0 && !initializer {
                // `typeof(x) name;` declares name too.
                if [UInt8(ascii: "("), UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: ","), UInt8(ascii: "[")].contains(next ?? 0),
                   previousIsType || previous == UInt8(ascii: ")") {
                    defined.insert(name)
                    if next == UInt8(ascii: "(") { parameterListDepth = 1 }
                }
            } else if braces == 0, parameterListDepth == parens, next == UInt8(ascii: ",") || next == UInt8(ascii: ")"), previousIsType {
                locals.insert(name)
            } else if braces > 0, previousIsType, [UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: ","), UInt8(ascii: "[")].contains(next ?? 0) {
                locals.insert(name)
            }
        }
    }
}

