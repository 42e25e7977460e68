import Foundation
import ModuleELF
import NVBuildSupport

/// A verify or try run: what was planned and what each load did.
public struct LoadReport: Sendable, Equatable, Codable {
    public var kernel: String
    /// "simulation" (verify) or "qemu" (try).
    public var method: String
    public var plan: LoadPlan
    public var results: [LoadResult]
    /// For "qemu": how the guest ran ("kvm" or "tcg"); absent for the simulation.
    public var accelerator: QemuTrial.Accelerator?
    /// What the user should know about how the run went, without failing it (KVM
    /// present but unusable, so the boot ran under TCG).
    public var diagnostics: [Diagnostic] = []
    /// For a verify that checked signatures: enforcement, lockdown and the trusted keys.
    public var signatures: SignaturePolicy.Summary?
    /// How compressed modules were handed to the kernel (as the target's kmod does).
    public var compressedHandoff: CompressedModuleHandoff?

    public init(kernel: String, method: String, plan: LoadPlan, results: [LoadResult], accelerator: QemuTrial.Accelerator? = nil) {
        self.kernel = kernel
        self.method = method
        self.plan = plan
        self.results = results
        self.accelerator = accelerator
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
            ofFiles: plan.loads.map(\.path), kernelLayoutCRC: model.exports["module_layout"].flatMap { model.checkedCRC($0) })
        var signatures: [SignatureVerification?] = Array(repeating: nil, count: facts.count)
        if let policy = model.signaturePolicy, model.moduleSignatures {
            for (index, load) in plan.loads.enumerated() {
                do {
                    signatures[index] = try SignatureVerifier.verify(path: load.path, certificates: policy.trusted)
                } catch {
                    throw UserError(.environment, "\(error.description); check the module file")
                }
            }
        }
        var simulation = LoaderSimulation(kernel: model)
        var results = zip(facts, signatures).map { simulation.load($0, signature: $1) }
        for index in results.indices {
            results[index].module = plan.loads[index].name
            for problem in plan.problems where problem.message.hasPrefix(LoadPlan.cyclePrefix) {
                let message = problem.message
                if message.contains(" \(plan.loads[index].name) ") || message.contains(": \(plan.loads[index].name) ") {
                    results[index].notes.append(.note(message))
                }
            }
        }
        return results
    }
}

extension ModuleTree {
    /// Reads the loader-relevant facts of a module file (see `LoaderFacts.read`).
    public func facts(ofFile path: String, kernelLayoutCRC: UInt32? = nil) throws -> LoaderFacts {
        try Self.facts(ofFile: path, kernelLayoutCRC: kernelLayoutCRC)
    }

    /// `LoaderFacts.read`, its failures said as the user's problem.
    static func facts(ofFile path: String, kernelLayoutCRC: UInt32?) throws -> LoaderFacts {
        do {
            return try LoaderFacts.read(path: path, kernelLayoutCRC: kernelLayoutCRC)
        } catch {
            switch error.problem {
            case .unreadable, .notRegularFile:
                throw UserError(.environment, "\(path): cannot read this module file; check the path and its permissions")
            case .notLoadable(let what):
                throw UserError(.environment, "\(path): not a kernel module (\(what)); pass a .ko file")
            default:
                throw UserError(.environment, "\(path): not a kernel module (\(error.detail))")
            }
        }
    }

    /// Facts of many files, read by one task per core. Decompressing .ko.xz dominates.
    public static func facts(
        ofFiles paths: [String], kernelLayoutCRC: UInt32? = nil, tasks: Int = ProcessInfo.processInfo.activeProcessorCount
    ) async throws -> [LoaderFacts] {
        let taskCount = max(1, min(tasks, paths.count / 64))
        if taskCount == 1 {
            return try paths.map { try facts(ofFile: $0, kernelLayoutCRC: kernelLayoutCRC) }
        }
        return try await withThrowingTaskGroup(of: [(Int, LoaderFacts)].self) { group in
            for worker in 0..<taskCount {
                group.addTask {
                    try Swift.stride(from: worker, to: paths.count, by: taskCount).map {
                        ($0, try facts(ofFile: paths[$0], kernelLayoutCRC: kernelLayoutCRC))
                    }
                }
            }
            var ordered = [LoaderFacts?](repeating: nil, count: paths.count)
            for try await chunk in group {
                for (index, facts) in chunk { ordered[index] = facts }
            }
            return ordered.map { $0! }
        }
    }
}
