import Conftest
import Foundation
import Kbuild
import KernelTree
import NVBuildSupport
import SourceTree
import Synchronization

/// Wires `nvbuild build` to the probe: NVIDIA-style trees get their conftest/
/// from `nvbuild probe` (with its cache) before make runs, and a compile error
/// that quotes an identifier a conftest test is about is explained by that
/// test's result on the kernel being built.
enum BuildHooks {
    /// Probe reports (with the catalog that produced them) by build tree, so a failing
    /// build can be explained by the probe that preceded it.
    private static let reports = Mutex<[String: (report: ProbeReport, catalog: Catalog)]>([:])

    /// `settings` are probe's own defaults unless the build names others: the same
    /// construction as `nvbuild probe`, so catalog, cache and module choices agree.
    static func prepare(for tree: DriverTree, settings: ProbeSettings = ProbeSettings()) -> KbuildBuilder.Prepare? {
        guard tree.requestsConftest else { return nil }
        return { kernel, buildTree in
            let options = try settings.options(tree: buildTree, kernel: kernel)
            let report = try await Prober.run(options)
            try ConftestOutput.write(report, to: buildTree + "/conftest")
            reports.withLock { $0[buildTree] = (report, options.catalog) }
        }
    }

    static func explain(for tree: DriverTree) -> KbuildBuilder.Explain? {
        guard tree.requestsConftest else { return nil }
        return { kernel, buildTree, failure in
            guard let probed = reports.withLock({ $0[buildTree] }) else { return nil }
            return explanation(for: failure.identifiers, report: probed.report, catalog: probed.catalog)
        }
    }

    /// The tests whose definitions name one of the identifiers, with their results.
    static func explanation(for identifiers: [String], report: ProbeReport, catalog: Catalog) -> String? {
        var lines: [String] = []
        for identifier in identifiers where identifier.count > 2 {
            for test in report.tests {
                // The definition the probe used (none for delegated tests).
                guard let location = test.definition, let def = catalog.candidates(test.name).first(where: { $0.location == location }) else { continue }
                let text = ([def.name, def.code ?? ""] + def.probes.map(\.code) + def.macros + ["\(def.check)"]).joined(separator: "\n")
                guard text.contains(identifier) else { continue }
                lines.append("conftest \(test.name) on \(report.kernel.release): \(test.lines.map(\.text).joined(separator: "; ")) — \(test.reasoning) (nvbuild probe explain \(test.name))")
            }
        }
        return lines.isEmpty ? nil : Array(Set(lines)).sorted().joined(separator: "\n")
    }
}
