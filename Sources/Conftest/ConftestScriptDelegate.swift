import Foundation
import KernelTree
import NVBuildSupport

/// The tree's own conftest.sh, for tests the catalog lacks: one call per test, as the
/// tree's Kbuild makes them, in a directory that shows conftest.sh this probe's headers.h.
struct ConftestScriptDelegate {
    var script: String
    var treePath: String
    var kernel: KernelTarget
    var compiler: CompilerCommand
    var flags: [String]
    var environment: [String: String]
    var jobs: Int
    var scratch: String
    /// Each conftest.sh run holds one of these (it runs the compiler).
    var slots: JobSlots?

    /// Nil when the tree has no conftest.sh (the plan has already refused to need one).
    init?(tree: ConftestRequests, kernel: KernelTarget, compiler: CompilerCommand, flags: [String],
          environment: [String: String], jobs: Int, scratch: String, slots: JobSlots? = nil) {
        guard let script = tree.conftestScript else { return nil }
        self.script = script
        self.treePath = tree.path
        self.kernel = kernel
        self.compiler = compiler
        self.flags = flags
        self.environment = environment
        self.jobs = jobs
        self.scratch = scratch
        self.slots = slots
    }

    /// The results of `names`; throws when conftest.sh fails for any (nothing else knows them).
    func run(_ tests: [(name: String, reason: Delegation, arm: ConftestArms.Arm?, candidates: [TestDefinition])],
             presence: [ProbeReport.HeaderPresenceResult], utsRelease: String,
             progress: ProbeProgress) async throws -> [TestResult] {
        guard !tests.isEmpty else { return [] }
        let names = tests.map(\.name)
        progress(.delegated, 0, names.count)
        let directory = try mirror(headersH: ConftestOutput.headersH(presence, utsRelease: utsRelease))
        // The tree's include paths point into the mirror, where conftest.sh writes its side files.
        let treePrefix = "-I" + treePath
        let cflags = flags.map { $0.hasPrefix(treePrefix) ? "-I" + directory + $0.dropFirst(treePrefix.count) : $0 }
            .joined(separator: " ")
        // conftest.sh splits $CC itself: it gets the words joined, as the Kbuild passes it.
        let base = ["/bin/sh", directory + "/conftest.sh", compiler.description, kernel.arch,
                    kernel.sourceDirectory, kernel.outputDirectory, "compile_tests", cflags]
        let script = script, environment = environment, slots = slots
        let results = try await concurrentMap(tests, limit: max(1, jobs)) { test in
            let name = test.name
            let command = base + [name]
            @Sendable func conftest() async throws -> ProcessOutput {
                try await ProcessRunner(environment: environment).run(command, workingDirectory: directory)
            }
            let out: ProcessOutput
            if let slots { out = try await slots.run(conftest) } else { out = try await conftest() }
            let lines = out.standardOutput.split(separator: "\n").map { MacroLine(parsing: String($0)) }
            var result = TestResult(name: name, origin: .delegated, lines: lines,
                                    reasoning: Self.reasoning(test.reason, arm: test.arm, candidates: test.candidates, script: script),
                                    outcomes: [ProbeOutcome(probe: "conftest.sh", compiled: out.succeeded, diagnostics: out.standardError, command: command)],
                                    note: nil,
                                    suspicious: out.succeeded ? nil : .error("\(name): conftest.sh exited \(out.exitStatus): \(out.standardError.prefix(200))", file: script))
            result.delegation = test.reason
            result.upstreamArm = test.arm.map { .init($0) }
            return result
        }
        let failed = results.filter { $0.outcomes.first?.compiled == false }
        if !failed.isEmpty {
            throw UserError(.failed, "the tree's conftest.sh could not compute \(failed.map(\.name).joined(separator: ", ")) (\(failed[0].outcomes[0].diagnostics.trimmingCharacters(in: .whitespacesAndNewlines))); nvbuild's catalog lacks them too")
        }
        progress(.delegated, names.count, names.count)
        return results
    }

    static func reasoning(_ reason: Delegation, arm: ConftestArms.Arm?, candidates: [TestDefinition], script: String) -> String {
        switch reason {
        case .unknown:
            return "not in the catalog: computed by \(script)"
        case .changedUpstream:
            let verified = candidates.map { "\($0.location) (Upstream: \($0.upstream.isEmpty ? "none" : $0.upstream.joined(separator: " ")))" }
            return "changed upstream: the tree's arm (\(script):\(arm?.line ?? 0), fingerprint \(arm?.fingerprint ?? "?")) matches none of the catalog's definitions, verified against other arms: \(verified.joined(separator: "; ")); computed by \(script)"
        }
    }

    /// conftest.sh works in its own directory and reads conftest/headers.h there: a directory
    /// that mirrors the tree (symlinks) but holds this probe's headers.h.
    private func mirror(headersH: String) throws -> String {
        let directory = scratch + "/delegate"
        try FileManager.default.createDirectory(atPath: directory + "/conftest", withIntermediateDirectories: true)
        try Data(headersH.utf8).write(to: URL(fileURLWithPath: directory + "/conftest/headers.h"))
        let treeDir = URL(fileURLWithPath: script).deletingLastPathComponent().path
        for entry in try FileManager.default.contentsOfDirectory(atPath: treeDir) where entry != "conftest" {
            try FileManager.default.createSymbolicLink(atPath: directory + "/" + entry, withDestinationPath: treeDir + "/" + entry)
        }
        return directory
    }
}
