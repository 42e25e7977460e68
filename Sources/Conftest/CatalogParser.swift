import Foundation
import NVBuildSupport

/// A problem in a catalog file, with its location.
public struct CatalogError: Error, CustomStringConvertible, Sendable, Equatable {
    public var location: SourceLocation
    public var message: String
    public var description: String { "\(location): \(message)" }
}

/// The parsed catalog: test definitions by name (several per name when they
/// apply to different driver releases).
public struct Catalog: Sendable {
    public private(set) var definitions: [TestDefinition]
    private var byName: [String: [Int]]

    public init(definitions: [TestDefinition]) {
        self.definitions = definitions
        var byName: [String: [Int]] = [:]
        for (i, d) in definitions.enumerated() { byName[d.name, default: []].append(i) }
        self.byName = byName
    }

    /// The definition of `name` that applies to driver `release` (nil release: the only one, or the one without a release set).
    public func definition(_ name: String, release: String?) -> TestDefinition? {
        guard let indices = byName[name] else { return templateDefinition(name, release: release) }
        let candidates = indices.map { definitions[$0] }
        if let release {
            return candidates.first { $0.releases?.contains(release) ?? true }
        }
        return candidates.first { $0.releases == nil } ?? candidates.first
    }

    public var names: [String] { byName.keys.sorted() }

    /// A family of tests named by a template such as `is_export_symbol_present_{symbol}`
    /// (conftest.sh answers any name of that shape): the part of the requested name
    /// that stands for `{symbol}` is substituted into the check and the macro.
    func templateDefinition(_ name: String, release: String?) -> TestDefinition? {
        templateDefinitions(name).first { $0.releases?.contains(release ?? "") ?? true }
    }

    /// Every template definition whose shape `name` has, expanded for it.
    func templateDefinitions(_ name: String) -> [TestDefinition] {
        var result: [TestDefinition] = []
        for template in definitions where template.name.contains("{symbol}") {
            let parts = template.name.components(separatedBy: "{symbol}")
            guard parts.count == 2, name.hasPrefix(parts[0]), name.hasSuffix(parts[1]),
                name.count > parts[0].count + parts[1].count
            else { continue }
            let symbol = String(name.dropFirst(parts[0].count).dropLast(parts[1].count))
            var d = template
            d.name = name
            d.macros = d.macros.map { $0.replacingOccurrences(of: "{symbol}", with: symbol) }
            switch d.check {
            case .exportPresent: d.check = .exportPresent(symbol: symbol)
            case .exportGPL: d.check = .exportGPL(symbol: symbol)
            case .exportPlain: d.check = .exportPlain(symbol: symbol)
            case .exportGPLBare: d.check = .exportGPLBare(symbol: symbol)
            default: break
            }
            result.append(d)
        }
        return result
    }

    /// Every definition that could answer `name`: those of its exact name, then templates.
    public func candidates(_ name: String) -> [TestDefinition] {
        (byName[name] ?? []).map { definitions[$0] } + templateDefinitions(name)
    }

    /// Reads every `*.conftest` file of a directory.
    public static func load(directory: String) throws -> Catalog {
        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
            .filter { $0.hasSuffix(".conftest") }
            .sorted()
        var sources: [(String, String)] = []
        for file in files {
            let path = directory + "/" + file
            let text = try TextFile.read(path)
            sources.append((path, text))
        }
        return try CatalogParser.parse(sources)
    }

    /// The catalog shipped with nvbuild: `conftest/` at the top of the
    /// repository, or `NVBUILD_CATALOG`, or beside an installed binary
    /// (`../share/nvbuild/conftest`).
    public static func defaultDirectory(executablePath: String = CommandLine.arguments.first ?? "") -> String? {
        if let env = ProcessInfo.processInfo.environment["NVBUILD_CATALOG"], !env.isEmpty { return env }
        var candidates: [String] = []
        let exe = URL(fileURLWithPath: executablePath).resolvingSymlinksInPath().deletingLastPathComponent()
        candidates.append(exe.appendingPathComponent("../share/nvbuild/conftest").standardizedFileURL.path)
        // A development build lives in <repo>/.build/<config>/.
        var dir = exe
        for _ in 0..<5 {
            candidates.append(dir.appendingPathComponent("conftest").path)
            dir = dir.deletingLastPathComponent()
        }
        // This source file's repository, for tests.
        let sourceRepo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        candidates.append(sourceRepo.appendingPathComponent("conftest").path)
        return candidates.first { FileManager.default.fileExists(atPath: $0 + "/FORMAT.md") }
    }
}

/// Reads the stanza format described in conftest/FORMAT.md.
enum CatalogParser {
    struct Field {
        var name: String
        var argument: String
        var body: [String]
        var line: Int
    }

    struct Stanza {
        var fields: [Field]
        var file: String
        var line: Int

        func all(_ name: String) -> [Field] { fields.filter { $0.name == name } }
        func one(_ name: String) -> Field? { fields.first { $0.name == name } }
    }

    static func stanzas(file: String, text: String) throws -> [Stanza] {
        var result: [Stanza] = []
        var current: Stanza?
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        func finish() {
            if let c = current, !c.fields.isEmpty { result.append(c) }
            current = nil
        }
        for (i, raw) in lines.enumerated() {
            let number = i + 1
            if raw.trimmingCharacters(in: .whitespaces).isEmpty {
                finish()
                continue
            }
            if raw.hasPrefix("#") { continue }
            if raw.first == " " || raw.first == "\t" {
                guard current != nil, !current!.fields.isEmpty else {
                    throw CatalogError(location: .init(file: file, line: number), message: "continuation line outside a field")
                }
                current!.fields[current!.fields.count - 1].body.append(raw)
                continue
            }
            guard let colon = raw.firstIndex(of: ":") else {
                throw CatalogError(location: .init(file: file, line: number), message: "expected 'Field: value'")
            }
            let name = String(raw[..<colon])
            let argument = raw[raw.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if current == nil { current = Stanza(fields: [], file: file, line: number) }
            current!.fields.append(Field(name: name, argument: argument, body: [], line: number))
        }
        finish()
        return result
    }

    /// Removes the common indentation of a continuation block; `.` lines become empty.
    static func dedent(_ lines: [String]) -> String {
        let expanded = lines.map { $0.replacingOccurrences(of: "\t", with: "    ") }
        let indent = expanded.filter { $0.trimmingCharacters(in: .whitespaces) != "." }
            .map { $0.prefix { $0 == " " }.count }.min() ?? 0
        return expanded.map { line in
            line.trimmingCharacters(in: .whitespaces) == "." ? "" : String(line.dropFirst(indent))
        }.joined(separator: "\n")
    }

    /// Fields a stanza may hold once; a second one would silently replace or be ignored.
    static let singleValueFields: Set<String> = ["Test", "Includes", "Check", "Macro", "Code", "Value", "Releases", "Upstream", "Note"]

    /// A repeated single-value field, reported at its second occurrence.
    static func rejectRepeatedFields(_ s: Stanza) throws {
        var first: [String: Int] = [:]
        for field in s.fields where singleValueFields.contains(field.name) {
            if let line = first[field.name] {
                throw CatalogError(location: .init(file: s.file, line: field.line),
                                   message: "'\(field.name):' given twice in one stanza (first on line \(line)); it takes one value")
            }
            first[field.name] = field.line
        }
    }

    static let knownTestFields: Set<String> = [
        "Test", "Check", "Macro", "Include", "Code", "Probe", "Result", "File", "Value", "Releases", "Upstream", "Note", "Symvers",
    ]

    static func parse(_ sources: [(file: String, text: String)]) throws -> Catalog {
        var blocks: [String: String] = [:]
        var testStanzas: [Stanza] = []
        for (file, text) in sources {
            for stanza in try stanzas(file: file, text: text) {
                try rejectRepeatedFields(stanza)
                if let includes = stanza.one("Includes") {
                    guard let code = stanza.one("Code") else {
                        throw CatalogError(location: .init(file: file, line: stanza.line), message: "Includes block '\(includes.argument)' has no Code")
                    }
                    if blocks[includes.argument] != nil {
                        throw CatalogError(location: .init(file: file, line: stanza.line), message: "Includes block '\(includes.argument)' defined twice")
                    }
                    blocks[includes.argument] = dedent((code.argument.isEmpty ? [] : ["    " + code.argument]) + code.body)
                } else {
                    testStanzas.append(stanza)
                }
            }
        }
        var definitions: [TestDefinition] = []
        var byName: [String: [TestDefinition]] = [:]
        for stanza in testStanzas {
            let d = try definition(stanza, blocks: blocks)
            // Two definitions that could both apply to one release would make the choice
            // depend on file order.
            if let other = byName[d.name]?.first(where: { ReleaseSet.overlap($0.releases, d.releases) }) {
                throw CatalogError(location: d.location, message: "\(d.name): 'Releases: \(d.releases?.description ?? "(all)")' overlaps 'Releases: \(other.releases?.description ?? "(all)")' of the definition at \(other.location)")
            }
            // One arm must select one definition.
            if let other = byName[d.name]?.first(where: { !Set($0.upstream).isDisjoint(with: d.upstream) }) {
                let shared = Set(other.upstream).intersection(d.upstream).sorted()
                throw CatalogError(location: d.location, message: "\(d.name): 'Upstream: \(shared.joined(separator: " "))' is also listed by the definition at \(other.location); an arm's fingerprint may select one definition only")
            }
            byName[d.name, default: []].append(d)
            definitions.append(d)
        }
        return Catalog(definitions: definitions)
    }

    static func definition(_ s: Stanza, blocks: [String: String]) throws -> TestDefinition {
        func fail(_ message: String, _ line: Int? = nil) -> CatalogError {
            CatalogError(location: .init(file: s.file, line: line ?? s.line), message: message)
        }
        for field in s.fields where !knownTestFields.contains(field.name) {
            throw fail("unknown field '\(field.name)'", field.line)
        }
        guard let name = s.one("Test")?.argument, !name.isEmpty else { throw fail("stanza without 'Test:'") }
        guard let checkText = s.one("Check")?.argument, !checkText.isEmpty else { throw fail("\(name): missing 'Check:'") }
        let macros = (s.one("Macro")?.argument ?? "").split(separator: " ").map(String.init)
        guard !macros.isEmpty else { throw fail("\(name): missing 'Macro:'") }
        guard let note = s.one("Note")?.argument, !note.isEmpty else { throw fail("\(name): missing 'Note:'") }

        let words = checkText.split(separator: " ").map(String.init)
        let check: TestDefinition.Check
        switch words[0] {
        case "function":
            guard words.count == 2 || checkText.contains("(") else { throw fail("\(name): 'Check: function NAME[(ARGS)]'") }
            let rest = checkText.dropFirst("function".count).trimmingCharacters(in: .whitespaces)
            if let open = rest.firstIndex(of: "("), rest.hasSuffix(")") {
                check = .function(name: String(rest[..<open]), arguments: String(rest[rest.index(after: open)..<rest.index(before: rest.endIndex)]))
            } else {
                check = .function(name: rest, arguments: "")
            }
        case "member":
            let rest = checkText.dropFirst("member".count).trimmingCharacters(in: .whitespaces)
            guard let dot = rest.lastIndex(of: ".") else { throw fail("\(name): 'Check: member TYPE.MEMBER'") }
            check = .member(type: String(rest[..<dot]), member: String(rest[rest.index(after: dot)...]))
        case "compiles": check = .compiles
        case "fails": check = .fails
        case "rules": check = .rules
        case "export":
            guard words.count == 3, ["present", "gpl", "plain", "gpl-bare"].contains(words[1]) else { throw fail("\(name): 'Check: export present|gpl|plain|gpl-bare SYMBOL'") }
            switch words[1] {
            case "present": check = .exportPresent(symbol: words[2])
            case "gpl": check = .exportGPL(symbol: words[2])
            case "gpl-bare": check = .exportGPLBare(symbol: words[2])
            default: check = .exportPlain(symbol: words[2])
            }
        case "exports-all":
            guard words.count >= 2 else { throw fail("\(name): 'Check: exports-all SYMBOL...'") }
            check = .exportsAll(symbols: Array(words.dropFirst()))
        case "env":
            guard words.count == 2 else { throw fail("\(name): 'Check: env VARIABLE'") }
            check = .environment(variable: words[1])
        case "env-value":
            guard words.count == 2 else { throw fail("\(name): 'Check: env-value VARIABLE'") }
            check = .environmentValue(variable: words[1])
        default:
            throw fail("\(name): unknown check pattern '\(words[0])'")
        }

        var includes: [TestDefinition.IncludeItem] = []
        for field in s.all("Include") {
            let items = ([field.argument] + field.body).flatMap { $0.split(separator: ",") }
                .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            for item in items {
                if item.hasPrefix("@") {
                    let blockName = String(item.dropFirst())
                    guard let code = blocks[blockName] else { throw fail("\(name): unknown include block '@\(blockName)'", field.line) }
                    includes.append(.block(name: blockName, code: code))
                } else {
                    let parts = item.components(separatedBy: " if ")
                    if parts.count == 2 {
                        includes.append(.header(parts[0].trimmingCharacters(in: .whitespaces), guardMacro: parts[1].trimmingCharacters(in: .whitespaces)))
                    } else {
                        includes.append(.header(item, guardMacro: nil))
                    }
                }
            }
        }

        let code = s.one("Code").map { dedent(($0.argument.isEmpty ? [] : ["    " + $0.argument]) + $0.body) }
        let probes = s.all("Probe").map { TestDefinition.Probe(name: $0.argument, code: dedent($0.body)) }
        var results: [TestDefinition.ResultRule] = []
        for field in s.all("Result") {
            var conditions: [TestDefinition.ResultRule.Condition] = []
            if field.argument != "*" {
                for word in field.argument.split(separator: " ") {
                    let compiled = !word.hasPrefix("!")
                    let probe = String(compiled ? word : word.dropFirst())
                    guard probes.contains(where: { $0.name == probe }) else {
                        throw fail("\(name): Result names unknown probe '\(probe)'", field.line)
                    }
                    conditions.append(.init(probe: probe, compiled: compiled))
                }
            }
            let lines = field.body.isEmpty ? [] : dedent(field.body).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            results.append(.init(conditions: conditions, lines: lines))
        }
        let files = s.all("File").map { TestDefinition.AuxiliaryFile(name: $0.argument, content: dedent($0.body) + "\n") }
        let releases = s.one("Releases").map { ReleaseSet(terms: $0.argument.split(separator: " ").map(String.init)) }
        var upstream: [String] = []
        if let field = s.one("Upstream") {
            upstream = ([field.argument] + field.body).flatMap { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }) }.map(String.init)
            for fingerprint in upstream where fingerprint.count != 16 || !fingerprint.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) {
                throw fail("\(name): 'Upstream: \(fingerprint)' is not a fingerprint (16 lower-case hex digits, as nvbuild probe fingerprint prints)", field.line)
            }
            guard !upstream.isEmpty else { throw fail("\(name): 'Upstream:' lists no fingerprint", field.line) }
        }
        let symvers = s.all("Symvers").flatMap { ([$0.argument] + $0.body).map { $0.trimmingCharacters(in: .whitespaces) } }.filter { !$0.isEmpty }

        switch check {
        case .compiles, .fails:
            guard code != nil else { throw fail("\(name): '\(checkText)' needs 'Code:'") }
        case .rules:
            guard !probes.isEmpty, !results.isEmpty else { throw fail("\(name): 'Check: rules' needs Probe: and Result: fields") }
        case .exportsAll, .exportGPLBare:
            guard !symvers.isEmpty else { throw fail("\(name): '\(check.patternName)' needs 'Symvers:' candidates") }
        default: break
        }
        if check != .rules, macros.count != 1 {
            throw fail("\(name): pattern '\(check.patternName)' emits exactly one macro; use 'Check: rules' for more")
        }
        return TestDefinition(
            name: name, check: check, macros: macros, includes: includes, code: code, probes: probes,
            results: results, files: files, value: s.one("Value")?.argument, releases: releases,
            upstream: upstream, symversCandidates: symvers, note: note, location: .init(file: s.file, line: s.line)
        )
    }
}
