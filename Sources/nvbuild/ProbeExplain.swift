import ArgumentParser
import Conftest
import Foundation
import KernelTree
import NVBuildSupport

struct ExplainProbe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "Say why a test or macro came out as it did: definition, command, diagnostics, reasoning.",
        discussion: "Example: nvbuild probe explain NV_VM_FLAGS_SET_PRESENT --tree kernel-open --kernel 6.1.0-56-amd64"
    )

    @Argument(help: "A test name or a macro it emits.") var name: String
    @OptionGroup var probe: ProbeOptionsGroup
    @OptionGroup var kernel: KernelOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let (target, _) = try kernel.resolve()
        let catalog = try probe.loadCatalog()
        let base = try probe.options(kernel: target)
        let release = base.tree.driverVersion
        let testName: String
        if base.tree.allTests.contains(name) {
            testName = name
        } else if let test = base.tree.allTests.first(where: { catalog.choose($0, arms: base.tree.arms, release: release).definition?.macros.contains(name) ?? false }) {
            testName = test
        } else if let def = catalog.definitions.first(where: { $0.macros.contains(name) && ($0.releases?.contains(release ?? "") ?? true) }) {
            testName = def.name
        } else {
            throw UserError(.usage, "'\(name)' is neither a test the tree requests nor a macro of the catalog; see nvbuild probe list")
        }
        var options = base
        options.onlyTests = [testName]
        options.cache = nil
        // Each probe alone, so the diagnostics shown are exactly the compiler's for that source.
        options.grouping = false
        let report = try await Prober.run(options)
        guard let result = report.test(testName) else {
            throw UserError(.usage, "\(testName) is not requested by \(base.tree.path)")
        }
        let definition = catalog.choose(testName, arms: base.tree.arms, release: release).definition
        if json {
            try Terminal.json(Explanation(test: result, definition: definition, kernel: target.release, catalogMatching: report.catalogMatching))
            return
        }
        Terminal.out(Terminal.styled("\(testName)", .bold) + " on \(target.release)" + (definition.map { " — \($0.location)" } ?? ""))
        if let definition {
            Terminal.out("  pattern: \(definition.check.patternName)   macros: \(definition.macros.joined(separator: " "))")
            Terminal.out("  note:    \(definition.note)")
        }
        switch (result.delegation, result.upstreamArm) {
        case (.changedUpstream?, let arm):
            Terminal.out("  origin:  changed upstream — delegated to the tree's conftest.sh (its arm, fingerprint \(arm?.fingerprint ?? "?"), matches no definition's Upstream:)")
        case (.unknown?, _):
            Terminal.out("  origin:  unknown — not in the catalog, delegated to the tree's conftest.sh")
        case (nil, let arm?):
            Terminal.out("  origin:  catalog — the tree's conftest.sh arm (line \(arm.line), fingerprint \(arm.fingerprint)) is one the definition was verified against")
        case (nil, nil):
            Terminal.out("  origin:  catalog — \(report.catalogMatching.description)")
        }
        Terminal.out("  result:  \(result.lines.map(\.text).joined(separator: "; "))")
        Terminal.out("  why:     \(result.reasoning)")
        for outcome in result.outcomes {
            Terminal.out("")
            Terminal.out("  probe '\(outcome.probe)': \(outcome.compiled ? "compiled" : "failed to compile")")
            Terminal.out("  command: \(outcome.command.map(shellQuote).joined(separator: " "))")
            // Errors decide the result; show them with the notes that follow each, then count the rest.
            let lines = outcome.diagnostics.split(separator: "\n").map(String.init)
            var shown: [String] = []
            var inError = false
            for line in lines {
                if line.contains("error:") { inError = true; shown.append(line) }
                else if inError && line.contains("note:") { shown.append(line) }
                else if line.contains("warning:") { inError = false }
            }
            let warnings = lines.filter { $0.contains("warning:") }.count
            if shown.isEmpty {
                Terminal.out("  errors: none" + (warnings > 0 ? " (\(warnings) warnings; --json shows all diagnostics)" : ""))
            } else {
                Terminal.out("  errors:")
                for line in shown.prefix(12) { Terminal.out("    \(line)") }
                if shown.count > 12 { Terminal.out("    … \(shown.count - 12) more") }
                if warnings > 0 { Terminal.out("  (\(warnings) warnings not shown; --json shows all diagnostics)") }
            }
        }
        if let s = result.suspicious { Terminal.report(s) }
    }

    struct Explanation: Encodable {
        var test: TestResult
        var definition: TestDefinition?
        var kernel: String
        var catalogMatching: CatalogMatching
    }
}

func shellQuote(_ s: String) -> String {
    if s.allSatisfy({ $0.isLetter || $0.isNumber || "-_./=+:,@".contains($0) }) { return s }
    return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
}
