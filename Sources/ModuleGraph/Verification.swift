import Foundation
import NVBuildSupport

/// A verify or try run: what was planned and what each load did.
public struct LoadReport: Sendable, Equatable, Codable {
    public var kernel: String
    /// "simulation" (verify) or "qemu" (try).
    public var method: String
    public var plan: LoadPlan
    public var results: [LoadResult]

    public init(kernel: String, method: String, plan: LoadPlan, results: [LoadResult]) {
        self.kernel = kernel
        self.method = method
        self.plan = plan
        self.results = results
    }

    public var allLoad: Bool { plan.problems.isEmpty && results.allSatisfy(\.loads) }
}

extension ModuleTree {
    /// Simulates the target kernel's loader on `plan`. The Module.symvers that
    /// Kbuild writes next to out-of-tree modules is read automatically, so the
    /// GPL-only and namespace facts of their exports are known.
    public func simulate(_ plan: LoadPlan, kernel: KernelModel) throws -> [LoadResult] {
        var model = kernel
        var seenSymvers: Set<String> = []
        for load in plan.loads where !load.path.hasPrefix(moduleDirectory + "/") {
            let symvers = URL(fileURLWithPath: load.path).deletingLastPathComponent().path + "/Module.symvers"
            if seenSymvers.insert(symvers).inserted, FileManager.default.fileExists(atPath: symvers) {
                try model.addSymvers(at: symvers)
            }
        }
        let facts = try plan.loads.map { try self.facts(ofFile: $0.path) }
        var simulation = LoaderSimulation(kernel: model)
        var results = simulation.load(facts)
        for index in results.indices {
            results[index].module = plan.loads[index].name
            for problem in plan.problems where problem.hasPrefix("dependency cycle:") {
                if problem.contains(" \(plan.loads[index].name) ") || problem.contains(": \(plan.loads[index].name) ") {
                    results[index].notes.append(problem)
                }
            }
        }
        return results
    }
}
