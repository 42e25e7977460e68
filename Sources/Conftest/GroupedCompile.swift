import Foundation
import NVBuildSupport

/// One compile probe: what conftest.sh compiles as its own file.
struct CompileUnit: Sendable {
    var test: String
    var probe: String
    /// The include part (shared verbatim by units that may share a translation unit).
    var includes: String
    var body: String
    var files: [TestDefinition.AuxiliaryFile]
    /// For nvbuild's own generated shapes (a call, an offsetof): the identifier the
    /// body is about. Only such units are grouped, and never two with the same one.
    var groupToken: String?

    /// For a generated call probe, the function it calls.
    var calledFunction: String? {
        guard let token = groupToken, token.hasPrefix("call:") else { return nil }
        return String(token.dropFirst("call:".count))
    }

    /// For a generated offsetof probe, the type and the member it names.
    var offsetofProbe: (type: String, member: String)? {
        guard let token = groupToken, token.hasPrefix("member:"), let dot = token.firstIndex(of: ".") else { return nil }
        return (String(token[token.index(token.startIndex, offsetBy: "member:".count)..<dot]), String(token[token.index(after: dot)...]))
    }

    func source(preamble: String) -> String {
        preamble + (includes.isEmpty ? "" : includes + "\n") + body + "\n"
    }
}

/// Compiles units, grouping those with identical include sets into one
/// translation unit where that provably gives each unit its isolated result:
/// every diagnostic must be attributable to one unit's lines, a parser
/// checkpoint after each unit must be reached, and units that showed no error
/// in a failed group are recompiled without the failing ones until a group
/// compiles cleanly (so errors that only appear at code generation are seen).
/// Anything doubtful is compiled alone.
struct GroupedCompiler: Sendable {
    var runner: CompileRunner
    var preamble: String
    var maxGroup: Int = 24

    struct Result: Sendable {
        var compiled: Bool
        var diagnostics: String
        var dependencies: [String]
    }

    /// Batches of unit indices: groups (≥2) and singles.
    func plan(_ units: [CompileUnit]) -> [[Int]] {
        var groups: [String: [[Int]]] = [:]
        var order: [String] = []
        var singles: [[Int]] = []
        for (i, u) in units.enumerated() {
            guard let token = u.groupToken, u.files.isEmpty else {
                singles.append([i])
                continue
            }
            if groups[u.includes] == nil { order.append(u.includes) }
            var chunks = groups[u.includes] ?? []
            if let c = chunks.firstIndex(where: { chunk in chunk.count < maxGroup && !chunk.contains { units[$0].groupToken == token } }) {
                chunks[c].append(i)
            } else {
                chunks.append([i])
            }
            groups[u.includes] = chunks
        }
        // Largest groups first: they take longest.
        let grouped = order.flatMap { groups[$0]! }.sorted { $0.count > $1.count }
        return grouped + singles
    }

    func compile(_ batch: [Int], units: [CompileUnit], id: String) async throws -> [Int: Result] {
        func solo(_ i: Int, _ tag: String) async throws -> Result {
            let u = units[i]
            let r = try await runner.compile(id: tag, source: u.source(preamble: preamble), files: u.files)
            return Result(compiled: r.compiled, diagnostics: r.diagnostics, dependencies: r.dependencies)
        }
        var results: [Int: Result] = [:]
        var pending = batch
        var round = 0
        while !pending.isEmpty {
            round += 1
            if pending.count == 1 {
                results[pending[0]] = try await solo(pending[0], "\(id)-\(round)")
                break
            }
            let (source, ranges) = groupSource(pending.map { units[$0] })
            let r = try await runner.compile(id: "\(id)-\(round)", source: source, files: [])
            if r.compiled {
                for (k, i) in pending.enumerated() {
                    results[i] = Result(compiled: true, diagnostics: Self.diagnostics(r.diagnostics, in: ranges[k]), dependencies: r.dependencies)
                }
                break
            }
            // The group failed: units with attributed errors failed; the others are compiled
            // again without them. When no error can be attributed, every unit goes alone.
            let failing = Self.attribute(r.diagnostics, ranges: ranges) ?? []
            if failing.isEmpty {
                for (k, i) in pending.enumerated() {
                    results[i] = try await solo(i, "\(id)-solo-\(k)")
                }
                break
            }
            var next: [Int] = []
            for (k, i) in pending.enumerated() {
                if failing.contains(k) {
                    results[i] = Result(compiled: false, diagnostics: Self.diagnostics(r.diagnostics, in: ranges[k]), dependencies: r.dependencies)
                } else {
                    next.append(i)
                }
            }
            pending = next
        }
        return results
    }

    static func sentinel(_ k: Int) -> String { "nvbuild_checkpoint_\(k)" }

    /// The group's source and each unit's line range (1-based, inclusive, sentinel included).
    func groupSource(_ members: [CompileUnit]) -> (String, [ClosedRange<Int>]) {
        var text = preamble + (members[0].includes.isEmpty ? "" : members[0].includes + "\n")
        var line = text.reduce(0) { $1 == "\n" ? $0 + 1 : $0 } + 1
        var ranges: [ClosedRange<Int>] = []
        for (k, u) in members.enumerated() {
            let chunk = u.body + "\n" + "static void \(Self.sentinel(k))_fn(void) { int \(Self.sentinel(k)); }\n"
            let lines = chunk.reduce(0) { $1 == "\n" ? $0 + 1 : $0 }
            ranges.append(line...(line + lines - 1))
            text += chunk
            line += lines
        }
        return (text, ranges)
    }

    /// Indices of units with errors, or nil when some error cannot be attributed to a
    /// unit or some unit's checkpoint warning is missing (the parser did not get there sanely).
    static func attribute(_ stderr: String, ranges: [ClosedRange<Int>]) -> Set<Int>? {
        let lines = stderr.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var failing = Set<Int>()
        var seenCheckpoints = Set<Int>()
        var i = 0
        while i < lines.count {
            let line = lines[i]
            if let k = checkpoint(in: line) { seenCheckpoints.insert(k) }
            guard line.contains(": error: ") || line.contains(": fatal error: ") else {
                i += 1
                continue
            }
            // The error and its notes form one block; attribute by the first conftest.c location.
            var block = [line]
            var j = i + 1
            while j < lines.count, lines[j].contains(": note: ") || lines[j].hasPrefix(" ") || lines[j].hasPrefix("In file included") || lines[j].hasPrefix("                 from") {
                block.append(lines[j])
                j += 1
            }
            var unit: Int?
            for b in block {
                if let n = conftestLine(b), let k = ranges.firstIndex(where: { $0.contains(n) }) {
                    unit = k
                    break
                }
            }
            guard let k = unit, !line.contains("fatal error") else { return nil }
            failing.insert(k)
            i = j
        }
        guard seenCheckpoints.count == ranges.count else { return nil }
        return failing
    }

    static func conftestLine(_ line: String) -> Int? {
        guard let r = line.range(of: "conftest.c:") else { return nil }
        return Int(line[r.upperBound...].prefix { $0.isNumber })
    }

    static func checkpoint(in line: String) -> Int? {
        guard line.contains("unused variable"), let r = line.range(of: "nvbuild_checkpoint_") else { return nil }
        let digits = line[r.upperBound...].prefix { $0.isNumber }
        guard !digits.isEmpty, !line[r.upperBound...].dropFirst(digits.count).hasPrefix("_") else { return nil }
        return Int(digits)
    }

    /// The diagnostics that concern one unit's lines (for explain and the cache).
    static func diagnostics(_ stderr: String, in range: ClosedRange<Int>) -> String {
        stderr.split(separator: "\n").filter { line in
            guard let n = conftestLine(String(line)) else { return false }
            return range.contains(n) && !line.contains("nvbuild_checkpoint_")
        }.joined(separator: "\n")
    }
}
