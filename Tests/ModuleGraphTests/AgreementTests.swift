import Foundation
import KernelTree
import NVBuildSupport
import Synchronization
import TestSupport
import Testing

@testable import ModuleGraph

/// Builds the fixture modules of Tests/Fixtures/loadtest with a kernel's own Kbuild
/// in a temporary directory.
struct LoadTestModules {
    let release: String
    let directory: String

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/loadtest").path

    /// One build per kernel per test process, shared by the tests that need it.
    static let builds = Mutex<[String: Task<LoadTestModules, any Error>]>([:])

    static func shared(release: String) async throws -> LoadTestModules {
        let task = builds.withLock { builds in
            if let task = builds[release] { return task }
            let task = Task { try await build(release: release) }
            builds[release] = task
            return task
        }
        return try await task.value
    }

    static func build(release: String) async throws -> LoadTestModules {
        let directory = NSTemporaryDirectory() + "nvbuild-loadtest-\(release)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        for sub in ["base", "noimport", "badcrc", "proprietary"] {
            try FileManager.default.createDirectory(atPath: directory + "/" + sub, withIntermediateDirectories: true)
            for file in try FileManager.default.contentsOfDirectory(atPath: fixtures + "/" + sub) {
                try FileManager.default.copyItem(atPath: "\(fixtures)/\(sub)/\(file)", toPath: "\(directory)/\(sub)/\(file)")
            }
        }
        let modules = LoadTestModules(release: release, directory: directory)
        try await modules.make("base")
        // Missing namespace import and GPL-only use by a proprietary module are
        // modpost errors when it knows the exporter; built without its
        // Module.symvers the use is merely "undefined" and the kernel decides.
        try await modules.make("noimport", extra: ["KBUILD_MODPOST_WARN=1"])
        try await modules.make("proprietary", extra: ["KBUILD_MODPOST_WARN=1"])
        // A Module.symvers that lies about nvb_export_plain's CRC.
        let symvers = try String(contentsOfFile: directory + "/base/Module.symvers", encoding: .utf8)
        let altered = symvers.split(separator: "\n").map { line -> String in
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard fields.count >= 2, fields[1] == "nvb_export_plain", let crc = UInt32(fields[0].dropFirst(2), radix: 16) else { return String(line) }
            return ([String(format: "0x%08x", crc ^ 0x5A5A_5A5A)] + fields.dropFirst().map(String.init)).joined(separator: "\t")
        }.joined(separator: "\n") + "\n"
        try altered.write(toFile: directory + "/altered.symvers", atomically: true, encoding: .utf8)
        try await modules.make("badcrc", extra: ["KBUILD_EXTRA_SYMBOLS=\(directory)/altered.symvers"])
        return modules
    }

    func make(_ sub: String, extra: [String] = []) async throws {
        let result = try await ProcessRunner().run(
            ["make", "-C", "/lib/modules/\(release)/build", "M=\(directory)/\(sub)"] + extra + ["modules"])
        try #require(result.succeeded, "building \(sub) for \(release): \(result.standardError)")
    }

    func path(_ module: String) -> String {
        for sub in ["base", "noimport", "badcrc", "proprietary"] where FileManager.default.fileExists(atPath: "\(directory)/\(sub)/\(module).ko") {
            return "\(directory)/\(sub)/\(module).ko"
        }
        return "\(directory)/missing/\(module).ko"
    }

}

/// verify against try: every scenario in one boot per kernel, in an order where
/// earlier loads set up later ones (the simulation carries the same state).
@Suite(.serialized) struct AgreementTests {
    @Test(arguments: InstalledTrees.releases)
    func verifyAgreesWithQemu(release: String) async throws {
        try InstalledKernels.requireImage(release)
        // Another series: two ABIs of one series (6.12.117, 6.12.118) accept each other's modules.
        func series(_ name: String) -> String { name.split(separator: ".").prefix(2).joined(separator: ".") }
        let other = try #require(
            InstalledTrees.releases.first { series($0) != series(release) }, "needs a kernel of the other series for the wrong-kernel scenario")
        let mine = try await LoadTestModules.shared(release: release)
        let theirs = try await LoadTestModules.shared(release: other)

        let target = try KernelDiscovery().kernel(release: release)
        let tree = try ModuleTree(moduleDirectory: "/lib/modules/\(release)")
        var arguments = [
            mine.path("nvb_user"),  // before its exporter: unknown symbol (and the first taints)
            theirs.path("nvb_exporter"),  // built for the other kernel
            mine.path("nvb_exporter"),
            mine.path("nvb_exporter"),  // already loaded
            mine.path("nvb_user"),
            mine.path("nvb_badcrc"),  // altered CRC
            mine.path("nvb_gpl_exporter"),
            mine.path("nvb_gpl_user"),
            mine.path("nvb_prop_user"),  // proprietary user of a GPL-only symbol
            mine.path("nvb_ns_exporter"),
            mine.path("nvb_ns_noimport"),  // namespace not imported
            mine.path("nvb_ns_user"),
            mine.path("nvb_cycle_a"),  // cycle: neither half can load first
            mine.path("nvb_cycle_b"),
            "ext4",  // a distro module without its dependencies
        ]
        // ...and then with them, in the order modprobe computes.
        let ext4Order = tree.loadPlan(for: ["ext4"]).loads.map(\.path)
        #expect(ext4Order.count >= 2)
        arguments += ext4Order

        let plan = tree.loadPlan(for: arguments, dependencies: false)
        #expect(plan.problems.isEmpty)
        #expect(plan.loads.count == arguments.count)
        let model = try KernelModel(target: target, tree: tree)
        let predicted = try await tree.simulate(plan, kernel: model)

        // The accelerator auto picks, then TCG as well when that was KVM (a KVM boot is
        // seconds, a TCG one about ten times longer: TCG is also what machines without
        // /dev/kvm run). KVM that qemu cannot use here leaves auto on TCG: one run covers it.
        let clock = ContinuousClock()
        var start = clock.now
        let automatic = try await QemuTrial(target: target, timeoutSeconds: 240).run(plan.loads)
        var runs = [(automatic, clock.now - start)]
        if QemuTrial.kvmProblem() != nil {
            #expect(automatic.accelerator == .tcg && automatic.kvmFailure == nil, "no usable /dev/kvm, so no KVM attempt")
        }
        if automatic.accelerator == .kvm {
            start = clock.now
            runs.append((try await QemuTrial(target: target, timeoutSeconds: 240, acceleration: .tcg).run(plan.loads), clock.now - start))
        }
        for (outcome, elapsed) in runs {
            try Self.expectAgreement(release: release, predicted: predicted, outcome: outcome, elapsed: elapsed)
        }
    }

    static func expectAgreement(release: String, predicted: [LoadResult], outcome: QemuTrial.Outcome, elapsed: Duration) throws {
        let kernel = release
        let release = "\(kernel) (\(outcome.accelerator.rawValue))"
        #expect(outcome.completed, "qemu console:\n\(outcome.console.suffix(3000))")

        var table: [String] = []
        for (p, actual) in zip(predicted, outcome.results) {
            #expect(p.loads == actual.loads, "\(release) \(p.module): verify \(p.summary) / try \(actual.summary)")
            #expect(p.errno == actual.errno, "\(release) \(p.module)")
            #expect(p.messages.first == actual.messages.first, "\(release) \(p.module): first kernel message")
            #expect(p.messages == actual.messages, "\(release) \(p.module): all kernel messages")
            table.append("\(p.module)\t\(p.loads ? "loads" : Errno.name(p.errno))\t\(actual.loads ? "loads" : Errno.name(actual.errno))\t\(p.messages.first ?? "-")")
        }
        // The scenarios cover what they claim to cover, on the real kernel.
        let verdicts = outcome.results.map { ($0.loads, $0.errno) }
        #expect(verdicts[0] == (false, 2))
        #expect(verdicts[1] == (false, 8))
        #expect(verdicts[2] == (true, 0))
        #expect(verdicts[3] == (false, 17))
        #expect(outcome.results[5].messages.contains("nvb_badcrc: disagrees about version of symbol nvb_export_plain"))
        #expect(verdicts[8] == (false, 2))
        #expect(verdicts[10] == (false, 22))
        #expect(verdicts[12].0 == false && verdicts[13].0 == false)
        #expect(verdicts[14] == (false, 2))
        #expect(outcome.results.last?.loads == true)
        let report = "agreement \(release), boot \(elapsed)\(outcome.kvmFailure.map { ", KVM failed: \($0)" } ?? ""):\n"
            + table.joined(separator: "\n") + "\n"
        try? report.write(toFile: NSTemporaryDirectory() + "nvbuild-agreement-\(kernel)-\(outcome.accelerator.rawValue).tsv", atomically: true, encoding: .utf8)
        print("agreement \(release): \(table.count) loads agree, boot \(elapsed)")
    }

    @Test func dependencyCycleIsReported() async throws {
        let release = try InstalledTrees.first()
        let modules = try await LoadTestModules.shared(release: release)
        let tree = try ModuleTree(moduleDirectory: "/lib/modules/\(release)")
        let plan = tree.loadPlan(for: [modules.path("nvb_cycle_a"), modules.path("nvb_cycle_b")])
        let cycle = try #require(plan.cycles.first)
        #expect(cycle == ["nvb_cycle_a", "nvb_cycle_b", "nvb_cycle_a"] || cycle == ["nvb_cycle_b", "nvb_cycle_a", "nvb_cycle_b"])
        #expect(plan.problems.allSatisfy { $0.severity == .warning && $0.remedy != nil })
        // Out-of-tree users join the graph after their exporter given by path.
        let userPlan = tree.loadPlan(for: [modules.path("nvb_user"), modules.path("nvb_exporter")])
        #expect(userPlan.loads.map(\.name) == ["nvb_exporter", "nvb_user"])
    }
}
