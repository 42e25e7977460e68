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
    public func simulate(_ plan: LoadPlan, kernel: KernelModel) async throws -> [LoadResult] {
        var model = kernel
        var seenSymvers: Set<String> = []
        for load in plan.loads where !load.path.hasPrefix(moduleDirectory + "/") {
            let symvers = URL(fileURLWithPath: load.path).deletingLastPathComponent().path + "/Module.symvers"
            if seenSymvers.insert(symvers).inserted, FileManager.default.fileExists(atPath: symvers) {
                try model.addSymvers(at: symvers)
            }
        }
        let facts = try await Self.facts(
            ofFiles: plan.loads.map(\.path), kernelLayoutCRC: model.exports["module_layout"]?.crc)
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

extension ModuleTree {
    /// Facts of many files, read by one task per core. Decompressing .ko.xz dominates.
    public static func facts(
        ofFiles paths: [String], kernelLayoutCRC: UInt32? = nil, tasks: Int = ProcessInfo.processInfo.activeProcessorCount
    ) async throws -> [ModuleFacts] {
        let taskCount = max(1, min(tasks, paths.count / 64))
        if taskCount == 1 {
            return try paths.map { try ModuleFacts.read(path: $0, kernelLayoutCRC: kernelLayoutCRC) }
        }
        return try await withThrowingTaskGroup(of: [(Int, ModuleFacts)].self) { group in
            for worker in 0..<taskCount {
                group.addTask {
                    try Swift.stride(from: worker, to: paths.count, by: taskCount).map {
                        ($0, try ModuleFacts.read(path: paths[$0], kernelLayoutCRC: kernelLayoutCRC))
                    }
                }
            }
            var ordered = [ModuleFacts?](repeating: nil, count: paths.count)
            for try await chunk in group {
                for (index, facts) in chunk { ordered[index] = facts }
            }
            return ordered.map { $0! }
        }
    }
}
