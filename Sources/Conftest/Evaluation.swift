import Foundation
import KernelTree

/// How one compile probe ended.
public struct ProbeOutcome: Sendable, Equatable, Codable {
    public var probe: String
    public var compiled: Bool
    /// The compiler's complete stderr (conftest.sh throws it away; nvbuild keeps it).
    public var diagnostics: String
    /// The command conftest.sh's compile of this probe amounts to (what `probe explain` runs).
    public var command: [String]
    /// True when the result came from the cache.
    public var cached: Bool
    /// True when a union translation unit showed the outcome (its diagnostics' line numbers
    /// are that unit's); false when the probe was compiled alone with `command`.
    public var fromUnion: Bool

    public init(probe: String, compiled: Bool, diagnostics: String, command: [String], cached: Bool = false, fromUnion: Bool = false) {
        self.probe = probe
        self.compiled = compiled
        self.diagnostics = diagnostics
        self.command = command
        self.cached = cached
        self.fromUnion = fromUnion
    }
}

/// Turns probe outcomes and non-compiling facts into the lines a test emits,
/// with a sentence saying why.
public enum Evaluation {
    public struct Verdict: Sendable, Equatable, Codable {
        public var lines: [MacroLine]
        public var reasoning: String
    }

    public static func verdict(
        for definition: TestDefinition,
        outcomes: [String: ProbeOutcome],
        symvers: [SymbolExport],
        environment: [String: String],
        symversCandidates: (TestDefinition) -> [String] = { _ in [] }
    ) -> Verdict {
        let macro = definition.macros.first ?? ""
        let defined = "#define \(macro)" + (definition.value.map { " " + $0 } ?? "")
        let undefined = "#undef \(macro)"
        func finish(_ lines: [String], _ why: String) -> Verdict {
            Verdict(lines: lines.map(ProbeSource.normalize).filter { !$0.isEmpty }.map(MacroLine.init(parsing:)), reasoning: why)
        }
        switch definition.check {
        case .function(let name, let arguments):
            let compiled = outcomes["call"]?.compiled ?? false
            let call = "\(name)(\(arguments))"
            return compiled
                ? finish([undefined], "the call \(call) compiled, so no prototype rejected it: the function is not declared → undefined")
                : finish([defined], "the call \(call) failed to compile: a declared prototype rejects it, so the function is declared → defined")
        case .member(let type, let member):
            let compiled = outcomes["member"]?.compiled ?? false
            return compiled
                ? finish([defined], "offsetof(\(type), \(member)) compiled: the member exists → defined")
                : finish([undefined], "offsetof(\(type), \(member)) failed to compile: no such member (or type) → undefined")
        case .compiles:
            let compiled = outcomes["code"]?.compiled ?? false
            return compiled
                ? finish([defined], "the test code compiled → defined")
                : finish([undefined], "the test code failed to compile → undefined")
        case .fails:
            let compiled = outcomes["code"]?.compiled ?? false
            return compiled
                ? finish([undefined], "the test code compiled, which this test reads as absent → undefined")
                : finish([defined], "the test code failed to compile, which this test reads as present → defined")
        case .rules:
            for rule in definition.results {
                let holds = rule.conditions.allSatisfy { outcomes[$0.probe]?.compiled == $0.compiled }
                guard holds else { continue }
                let state = definition.probes.map { p in "\(p.name) \(outcomes[p.name]?.compiled == true ? "compiled" : "failed")" }
                    .joined(separator: ", ")
                let which = rule.conditions.isEmpty ? "the fallback rule" : "the rule for " + rule.conditions.map { ($0.compiled ? "" : "!") + $0.probe }.joined(separator: " ")
                return finish(rule.lines, "probes: \(state); \(which) applies")
            }
            return finish([], "no result rule matched the probe outcomes: nothing emitted")
        case .exportPresent(let symbol):
            let found = symvers.contains { exports($0, symbol: symbol, gplOnly: false) }
            return finish(["#define \(macro) \(found ? 1 : 0)"], found
                ? "Module.symvers exports \(symbol) → 1"
                : "Module.symvers does not export \(symbol) → 0")
        case .exportGPL(let symbol):
            let found = symvers.contains { exports($0, symbol: symbol, gplOnly: true) }
            return finish(["#define \(macro) \(found ? 1 : 0)"], found
                ? "Module.symvers exports \(symbol) GPL-only without a namespace → 1"
                : "Module.symvers has no GPL-only, namespace-free export of \(symbol) → 0")
        case .exportPlain(let symbol):
            let found = symvers.contains { exportsPlainly($0, symbol: symbol) }
            return finish(["#define \(macro) \(found ? 1 : 0)"], found
                ? "Module.symvers exports \(symbol) as EXPORT_SYMBOL or EXPORT_SYMBOL_GPL without a namespace → 1"
                : "Module.symvers has no EXPORT_SYMBOL or EXPORT_SYMBOL_GPL export of \(symbol) without a namespace → 0")
        case .exportGPLBare(let symbol):
            let paths = symversCandidates(definition).filter { FileManager.default.isReadableFile(atPath: $0) }
            let found = paths.contains { path in
                guard let data = FileManager.default.contents(atPath: path) else { return false }
                return String(decoding: data, as: UTF8.self).split(separator: "\n").contains { endsWithBareGPLExport(String($0), symbol: symbol) }
            }
            return finish(["#define \(macro) \(found ? 1 : 0)"], found
                ? "a Module.symvers line of \(symbol) ends with its GPL export type → 1"
                : "no Module.symvers line of \(symbol) ends with a GPL export type (a namespace column follows it, or it is not GPL) → 0")
        case .exportsAll(let symbols):
            for path in symversCandidates(definition) {
                guard FileManager.default.isReadableFile(atPath: path) else { continue }
                let found = ModuleSymvers.exports(naming: Set(symbols), inFileAt: path)
                if symbols.allSatisfy({ s in found.contains { exports($0, symbol: s, gplOnly: false) } }) {
                    return finish([defined], "\(path) exports \(symbols.joined(separator: " and ")) → defined")
                }
            }
            return finish([undefined], "no candidate Module.symvers exports all of \(symbols.joined(separator: ", ")) → undefined")
        case .environment(let variable):
            let set = !(environment[variable] ?? "").isEmpty
            return finish([set ? defined : undefined], set ? "\(variable) is set → defined" : "\(variable) is not set → undefined")
        case .environmentValue(let variable):
            let value = environment[variable] ?? ""
            return finish([value.isEmpty ? undefined : "#define \(macro) \(value)"],
                value.isEmpty ? "\(variable) is not set → undefined" : "\(variable)=\(value) → defined to its value")
        }
    }

    /// Whether a Module.symvers entry exports `symbol` (an EXPORT_SYMBOL* type), or, for
    /// `gplOnly`, exports it GPL-only with nothing but blanks after the type (conftest.sh's
    /// grep patterns, read as KernelTree's fields).
    /// The line ends in `EXPORT_SYMBOL` or `EXPORT_SYMBOL_GPL` and blanks: the type with a
    /// blank namespace (the current layout), or the last field (the v5.4 layout, where the
    /// namespace came before the module).
    static func exportsPlainly(_ export: SymbolExport, symbol: String) -> Bool {
        guard export.symbol == symbol else { return false }
        let plain: Set<String> = ["EXPORT_SYMBOL", "EXPORT_SYMBOL_GPL"]
        let blank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        let trimmed: (String) -> String = { String($0.reversed().drop(while: blank).reversed()) }
        let namespace = export.namespace ?? ""
        if plain.contains(trimmed(export.exportType)) && namespace.allSatisfy(blank) {
            return true
        }
        return plain.contains(trimmed(namespace))
    }

    /// `TAB symbol TAB … TAB EXPORT_(UNUSED_)*SYMBOL_GPL` at the very end of the line.
    static func endsWithBareGPLExport(_ line: String, symbol: String) -> Bool {
        guard let lastTab = line.lastIndex(of: "\t") else { return false }
        var type = Substring(line[line.index(after: lastTab)...])
        guard type.hasPrefix("EXPORT_") else { return false }
        type = type.dropFirst("EXPORT_".count)
        while type.hasPrefix("UNUSED_") { type = type.dropFirst("UNUSED_".count) }
        guard type == "SYMBOL_GPL" else { return false }
        guard let field = line.range(of: "\t" + symbol + "\t") else { return false }
        return line.index(before: field.upperBound) < lastTab
    }

    static func exports(_ export: SymbolExport, symbol: String, gplOnly: Bool) -> Bool {
        guard export.symbol == symbol else { return false }
        let namespace = export.namespace ?? ""
        if !gplOnly {
            return export.exportType.hasPrefix("EXPORT_SYMBOL") || namespace.hasPrefix("EXPORT_SYMBOL")
        }
        let type = export.exportType.trimmingCharacters(in: .whitespaces)
        let typeOK = type == "EXPORT_SYMBOL_GPL" || type == "EXPORT_UNUSED_SYMBOL_GPL"
        return typeOK && namespace.allSatisfy { $0 == " " || $0 == "\t" || $0 == "\r" }
    }
}
