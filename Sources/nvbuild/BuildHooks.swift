import Conftest
import Foundation
import Kbuild
import KernelTree
import NVBuildSupport
import SourceTree

/// Wires `nvbuild build` to the probe: NVIDIA-style trees get their conftest/
/// from `nvbuild probe` (with its cache) before make runs, and a compile error
/// that quotes an identifier a conftest test is about is explained by that
/// test's result on the kernel being built.
enum BuildHooks {
    /// Probe reports by build tree, so a failing build can be explained by the probe that preceded it.
    private static let reports = ReportStore()

    static func prepare(for tree: DriverTree) -> KbuildBuilder.Prepare? {
        guard tree.requestsConftest else { return nil }
        return { kernel, buildTree in
            let env = ProcessInfo.processInfo.environment
            guard let catalogDir = Catalog.defaultDirectory() else {
                throw UserError(.environment, "the conftest catalog was not found; set NVBUILD_CATALOG")
            }
            let options = ProbeOptions(
                tree: try Conftest.ConftestRequests.read(path: buildTree,
                                                   modules: env["NV_KERNEL_MODULES"].map { $0.split(separator: " ").map(String.init) },
                                                   excluded: (env["NV_EXCLUDE_KERNEL_MODULES"] ?? "").split(separator: " ").map(String.init)),
                kernel: kernel,
                catalog: try Catalog.load(directory: catalogDir),
                jobs: ProcessInfo.processInfo.activeProcessorCount,
                environment: env,
                cache: try ResultCache(directory: ResultCache.defaultDirectory(environment: env)))
            let report = try await Prober.run(options)
            try ConftestOutput.write(report, to: buildTree + "/conftest")
            reports.set(buildTree, report)
        }
    }

    static func explain(for tree: DriverTree) -> KbuildBuilder.Explain? {
        guard tree.requestsConftest else { return nil }
        return { kernel, buildTree, failure in
            guard let report = reports.get(buildTree), let dir = Catalog.defaultDirectory(),
                let catalog = try? Catalog.load(directory: dir)
            else { return nil }
            return explanation(for: failure.identifiers, report: report, catalog: catalog)
        }
    }

    /// The tests whose definitions name one of the identifiers, with their results.
    static func explanation(for identifiers: [String], report: ProbeReport, catalog: Catalog) -> String? {
        var lines: [String] = []
        for identifier in identifiers where identifier.count > 2 {
            for test in report.tests {
                guard let def = catalog.definition(test.name, release: report.driverVersion) else { continue }
                let text = ([def.name, def.code ?? ""] + def.probes.map(\.code) + def.macros + ["\(def.check)"]).joined(separator: "\n")
                guard text.contains(identifier) else { continue }
                lines.append("conftest \(test.name) on \(report.kernel.release): \(test.lines.joined(separator: "; ")) — \(test.reasoning) (nvbuild probe explain \(test.name))")
            }
        }
        return lines.isEmpty ? nil : Array(Set(lines)).sorted().joined(separator: "\n")
    }
}

final class ReportStore: @unchecked Sendable {
    private var reports: [String: ProbeReport] = [:]
    private let lock = NSLock()

    func set(_ key: String, _ report: ProbeReport) {
        lock.lock()
        reports[key] = report
        lock.unlock()
    }

    func get(_ key: String) -> ProbeReport? {
        lock.lock()
        defer { lock.unlock() }
        return reports[key]
    }
}
