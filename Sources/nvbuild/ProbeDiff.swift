import ArgumentParser
import Conftest
import Foundation
import KernelTree
import NVBuildSupport

struct DiffProbe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Print every macro whose value differs between two kernels, with each test's note.",
        discussion: "Example: nvbuild probe diff --tree kernel-open --kernel 6.1.0-56-amd64 --kernel 6.12.117+deb12-amd64"
    )

    @OptionGroup var probe: ProbeOptionsGroup
    @Option(name: .customLong("kernel"), help: "Two kernel releases to compare (give --kernel twice).") var kernels: [String]
    @Flag(help: "Print JSON.") var json = false

    struct Change: Encodable {
        var test: String
        var macro: String
        var before: String
        var after: String
        var note: String?
    }

    func validate() throws {
        guard kernels.count == 2 else { throw ValidationError("give exactly two --kernel releases") }
    }

    func run() async throws {
        let discovery = KernelDiscovery()
        var reports: [ProbeReport] = []
        for release in kernels {
            reports.append(try await Prober.run(try probe.options(kernel: try discovery.kernel(release: release))))
        }
        let changes = Self.changes(reports[0], reports[1])
        if json {
            struct Document: Encodable { var from: String; var to: String; var changes: [Change] }
            try Terminal.json(Document(from: kernels[0], to: kernels[1], changes: changes))
            return
        }
        if changes.isEmpty { Terminal.out("no macro differs between \(kernels[0]) and \(kernels[1])") }
        for c in changes {
            Terminal.out("\(c.macro): \(c.before) → \(c.after)   (\(c.test))")
            if let note = c.note { Terminal.out("    \(note)") }
        }
    }

    /// Per macro: its state in each report (`undef`, `define`, or `define VALUE`).
    static func changes(_ a: ProbeReport, _ b: ProbeReport) -> [Change] {
        func states(_ r: ProbeReport) -> [String: (String, String, String?)] {
            var m: [String: (String, String, String?)] = [:]
            for h in r.headerPresence { m[h.macro] = (h.present ? "define" : "undef", "header " + h.header, nil) }
            for t in r.tests {
                for line in t.lines {
                    switch line {
                    case .define(let macro, let value): m[macro] = (value.map { "define \($0)" } ?? "define", t.name, t.note)
                    case .undef(let macro): m[macro] = ("undef", t.name, t.note)
                    case .other: continue
                    }
                }
            }
            return m
        }
        let sa = states(a), sb = states(b)
        var result: [Change] = []
        for macro in Set(sa.keys).union(sb.keys).sorted() {
            let x = sa[macro], y = sb[macro]
            if x?.0 != y?.0 {
                result.append(Change(test: (y ?? x)!.1, macro: macro, before: x?.0 ?? "absent", after: y?.0 ?? "absent", note: (y ?? x)!.2))
            }
        }
        return result
    }
}
