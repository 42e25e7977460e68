import Foundation

/// The first thing that went wrong in a Kbuild log.
public struct BuildFailure: Sendable, Equatable, Codable {
    /// The failing source file, as a path in the original tree when it is one.
    public var file: String?
    public var line: Int?
    /// The tree's own file that included `file`, when the error is in a kernel header.
    public var includedFrom: String?
    /// The first compiler error line and the few lines that explain it.
    public var errorLines: [String]
    /// Identifiers the error quotes (`‘foo’`), for asking which conftest result governs them.
    public var identifiers: [String]
    /// Filled in by the caller's explain hook: the conftest result behind an identifier.
    public var explanation: String?
    /// The translation unit the compiler was working on (the outermost file of the
    /// include chain, else `file`), as a path in the build copy: what ties the error to
    /// an object and so to a module.
    var compiledFile: String?

    private enum CodingKeys: String, CodingKey { case file, line, includedFrom, errorLines, identifiers, explanation }
}

public enum BuildLog {
    /// Reads `file:line:col: error: message` (and `fatal error:`) from a log;
    /// without one, the last make/modpost error lines.
    public static func firstFailure(in log: String, buildDirectory: String, sourceDirectory: String) -> BuildFailure? {
        compilerFailures(in: log, buildDirectory: buildDirectory, sourceDirectory: sourceDirectory).first
            ?? makeFailure(in: log, buildDirectory: buildDirectory, sourceDirectory: sourceDirectory)
    }

    /// Every compiler error in the log, in order (make -k keeps compiling past the first).
    static func compilerFailures(in log: String, buildDirectory: String, sourceDirectory: String) -> [BuildFailure] {
        let lines = log.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var failures: [BuildFailure] = []
        for (i, line) in lines.enumerated() {
            guard let parsed = compilerError(line) else { continue }
            var context = [line]
            var j = i + 1
            while j < lines.count, context.count < 6 {
                let next = lines[j]
                if next.hasPrefix("make") || compilerError(next) != nil || next.contains(": warning:") || next.hasPrefix("In file included") {
                    break
                }
                context.append(next)
                j += 1
            }
            let file = mapPath(parsed.file, buildDirectory: buildDirectory, sourceDirectory: sourceDirectory)
            // gcc lists the include chain just above the error: "In file included from a.c:3:",
            // then indented "from b.h:5:" lines; the outermost one is the compiled file.
            var includedFrom: String?
            var compiled: String?
            var k = i - 1
            while k >= 0, lines[k].hasPrefix("In file included from") || lines[k].hasPrefix("                 from ") {
                let entry = lines[k].replacingOccurrences(of: "In file included from", with: "").trimmingCharacters(in: .whitespaces)
                let trimmed = entry.hasPrefix("from ") ? String(entry.dropFirst(5)) : entry
                let location = trimmed.hasSuffix(":") || trimmed.hasSuffix(",") ? String(trimmed.dropLast()) : trimmed
                // The first chain line met walking up is the outermost file: the one compiled.
                if compiled == nil { compiled = String(location.split(separator: ":").first ?? "") }
                if location.hasPrefix(buildDirectory + "/") {
                    includedFrom = mapPath(location, buildDirectory: buildDirectory, sourceDirectory: sourceDirectory)
                }
                k -= 1
            }
            failures.append(BuildFailure(
                file: file, line: parsed.line, includedFrom: includedFrom,
                errorLines: context.map { mapText($0, buildDirectory: buildDirectory, sourceDirectory: sourceDirectory) },
                identifiers: quotedIdentifiers(parsed.message), explanation: nil, compiledFile: compiled ?? parsed.file))
        }
        return failures
    }

    /// Without a compiler error: the make/modpost error lines.
    static func makeFailure(in log: String, buildDirectory: String, sourceDirectory: String) -> BuildFailure? {
        let lines = log.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let errorish = lines.filter { $0.contains("ERROR:") || $0.contains("*** ") || $0.contains("Error ") || $0.contains("No such file") }
        guard !errorish.isEmpty else { return nil }
        return BuildFailure(
            file: nil, line: nil, includedFrom: nil,
            errorLines: errorish.prefix(6).map { mapText($0, buildDirectory: buildDirectory, sourceDirectory: sourceDirectory) },
            identifiers: [], explanation: nil)
    }

    /// Targets make reports as failed (`make[3]: *** [Makefile.build:234: /copy/a/b.o] Error 1`),
    /// as paths relative to the build copy.
    static func failedTargets(in log: String, buildDirectory: String) -> Set<String> {
        var targets: Set<String> = []
        for line in log.split(separator: "\n") {
            guard let open = line.range(of: "*** ["), let close = line.range(of: "] Error ", range: open.upperBound..<line.endIndex) else { continue }
            let inner = line[open.upperBound..<close.lowerBound]
            let target = inner.range(of: ": ", options: .backwards).map { String(inner[$0.upperBound...]) } ?? String(inner)
            targets.insert(relative(target, to: buildDirectory))
        }
        return targets
    }

    /// The objects a module is linked from, from the `<module>.mod` file Kbuild writes
    /// (one object path per line), relative to the build copy; nil when there is none.
    static func moduleObjects(modFile: String, buildDirectory: String) -> Set<String>? {
        guard let text = try? String(contentsOfFile: modFile, encoding: .utf8) else { return nil }
        return Set(text.split(whereSeparator: { $0 == "\n" || $0 == " " }).map { relative(String($0), to: buildDirectory) })
    }

    /// The object a compiled source becomes (`a/b.c` -> `a/b.o`), relative to the build copy.
    static func object(of source: String, buildDirectory: String) -> String {
        let path = relative(source, to: buildDirectory)
        guard let dot = path.lastIndex(of: "."), !path[dot...].contains("/") else { return path + ".o" }
        return path[..<dot] + ".o"
    }

    static func relative(_ path: String, to directory: String) -> String {
        var p = path
        if p.hasPrefix(directory + "/") { p.removeFirst(directory.count + 1) }
        while p.hasPrefix("./") { p.removeFirst(2) }
        return p
    }

    static func compilerError(_ line: String) -> (file: String, line: Int, message: String)? {
        for marker in [": fatal error: ", ": error: "] {
            guard let range = line.range(of: marker) else { continue }
            let location = line[..<range.lowerBound].split(separator: ":", omittingEmptySubsequences: false)
            guard location.count >= 2, let number = Int(location[1]) else { continue }
            return (String(location[0]), number, String(line[range.upperBound...]))
        }
        return nil
    }

    /// Words GCC puts in quotes: ‘name’ (UTF-8 locales) or 'name' (C locale).
    static func quotedIdentifiers(_ message: String) -> [String] {
        var result: [String] = []
        var current: String?
        for c in message {
            if c == "‘" || (c == "'" && current == nil) {
                current = ""
            } else if c == "’" || c == "'" {
                if let word = current {
                    for part in word.split(separator: " ") {
                        let p = String(part)
                        if p.first.map({ $0 == "_" || $0.isLetter }) == true, p.allSatisfy({ $0 == "_" || $0.isLetter || $0.isNumber }),
                            !["struct", "union", "enum", "const", "unsigned", "int", "long", "char", "void"].contains(p), !result.contains(p)
                        {
                            result.append(p)
                        }
                    }
                }
                current = nil
            } else if current != nil {
                current!.append(c)
            }
        }
        return result
    }

    static func mapPath(_ path: String, buildDirectory: String, sourceDirectory: String) -> String {
        var p = path
        if p.hasPrefix(buildDirectory + "/") {
            p = sourceDirectory + p.dropFirst(buildDirectory.count)
        }
        return p
    }

    static func mapText(_ text: String, buildDirectory: String, sourceDirectory: String) -> String {
        text.replacingOccurrences(of: buildDirectory + "/", with: sourceDirectory + "/")
    }
}
