import Foundation
import KernelTree
import NVBuildSupport
import Synchronization

/// The result of one test in a probe.
public struct TestResult: Sendable, Equatable, Codable {
    public enum Origin: String, Sendable, Codable {
        /// Computed from a catalog definition.
        case catalog
        /// The catalog lacks the test; the tree's own conftest.sh computed it.
        case delegated
    }

    public var name: String
    public var origin: Origin
    public var lines: [MacroLine]
    public var reasoning: String
    public var outcomes: [ProbeOutcome]
    public var note: String?
    /// Set when a failure looks unrelated to the feature (a missing header the test did not guard).
    public var suspicious: Diagnostic?
    /// For delegated tests: why (not in the catalog, or changed upstream).
    public var delegation: Delegation? = nil
    /// The catalog definition used (catalog results).
    public var definition: SourceLocation? = nil
    /// The tree's conftest.sh arm of the test, when the catalog was matched by fingerprint.
    public var upstreamArm: UpstreamArm? = nil

    /// A conftest.sh arm as reports show it.
    public struct UpstreamArm: Sendable, Equatable, Codable {
        public var fingerprint: String
        public var line: Int
        public init(_ arm: ConftestArms.Arm) {
            fingerprint = arm.fingerprint
            line = arm.line
        }
    }
}

/// Everything a probe found, in a form the CLI prints and the writer writes.
public struct ProbeReport: Sendable, Codable {
    public var kernel: KernelTarget
    public var treePath: String
    public var driverVersion: String?
    /// How catalog definitions were chosen (by conftest.sh arm fingerprints, or by name).
    public var catalogMatching: CatalogMatching
    public var compiler: CompilerCommand
    public var flags: [String]
    public var sanity: [SanityResult]
    public var headerPresence: [HeaderPresenceResult]
    /// Where the tree lists its headers; decides headers.h's shape.
    public var headerList: ConftestRequests.HeaderList
    public var utsRelease: String
    public var tests: [TestResult]
    public var requests: [String: [String]]
    public var patchFiles: [String]
    public var seconds: Double
    /// Seconds spent in each phase, for --verbose and benchmarks.
    public var phaseSeconds: [String: Double]
    /// Probes compiled in this run, and the compiler processes that took (union units share them).
    public var compiles: Int
    public var compilerRuns: Int
    public var cachedCompiles: Int
    /// Of the compiled probes, those whose outcome a union translation unit showed.
    public var unionCompiles: Int
    /// Cache entries (and manifests) refused as corrupt or sealed for another key, each
    /// recomputed instead of used.
    public var cacheRejected: Int

    public struct HeaderPresenceResult: Sendable, Equatable, Codable {
        public var header: String
        public var macro: String
        public var present: Bool
        public var line: String { macroLine.text }
        public var macroLine: MacroLine { present ? .define(macro, value: nil) : .undef(macro) }
    }

    public func test(_ name: String) -> TestResult? { tests.first { $0.name == name } }

    public var delegated: [String] { tests.filter { $0.origin == .delegated }.map(\.name) }
    /// Delegated because the catalog lacks them.
    public var unknown: [String] { tests.filter { $0.delegation == .unknown }.map(\.name) }
    /// Delegated because their conftest.sh arm matches no definition's `Upstream:`.
    public var changedUpstream: [String] { tests.filter { $0.delegation == .changedUpstream }.map(\.name) }
}

public struct ProbeOptions: Sendable {
    public var tree: ConftestRequests
    public var kernel: KernelTarget
    public var catalog: Catalog
    public var jobs: Int
    public var environment: [String: String]
    public var compilerOverride: String?
    /// Fail instead of delegating tests the catalog lacks.
    public var strict: Bool
    /// Only these tests (explain); nil runs everything the tree requests.
    public var onlyTests: Set<String>?
    public var cache: ResultCache?
    /// Compile probes together in union translation units where that provably gives each
    /// its own outcome (see UnionCompiler); otherwise each probe is compiled alone.
    public var grouping: Bool = true
    /// distcc / ccache in front of the compiler: compile probes go through them; steps distcc
    /// cannot distribute (preprocessing, header presence, the sanity checks) run the compiler here.
    public var launch = CompilerLaunch()
    /// A job budget shared with other work (make, other kernels' probes); nil gives the
    /// probe `jobs` slots of its own.
    public var slots: JobSlots?

    public init(tree: ConftestRequests, kernel: KernelTarget, catalog: Catalog, jobs: Int, environment: [String: String],
                compilerOverride: String? = nil, strict: Bool = false, onlyTests: Set<String>? = nil, cache: ResultCache? = nil) {
        self.tree = tree
        self.kernel = kernel
        self.catalog = catalog
        self.jobs = jobs
        self.environment = environment
        self.compilerOverride = compilerOverride
        self.strict = strict
        self.onlyTests = onlyTests
        self.cache = cache
    }
}

/// Phases reported while a probe runs.
public enum ProbePhase: String, Sendable {
    case sanity = "sanity checks"
    case headers = "header presence"
    case tests = "compile tests"
    case delegated = "delegated tests"
}

public typealias ProbeProgress = @Sendable (_ phase: ProbePhase, _ done: Int, _ total: Int) -> Void

public enum Prober {
    /// Runs the whole probe as its stages. Throws UserError for environment problems and
    /// failed sanity checks.
    public static func run(_ options: ProbeOptions, progress: @escaping ProbeProgress = { _, _, _ in }) async throws -> ProbeReport {
        var clock = PhaseClock()
        let kernel = options.kernel
        let env = options.environment
        let compiler = try Toolchain.require(options)
        let plan = ProbePlan(options)
        let scratch = FileManager.default.temporaryDirectory.path + "/nvbuild-probe-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        // Stopped by SIGINT/SIGTERM, the process exits from the signal handler: no defer runs.
        let scratchCleanup = Interruption.onStop {
            try? FileManager.default.removeItem(atPath: scratch)
            return nil
        }
        defer { Interruption.removeOnStop(scratchCleanup) }

        // Sanity checks first: a failing one stops the probe with its reason.
        progress(.sanity, 0, SanityCheck.allCases.count)
        let cache = options.cache
        let rejectedBefore = cache?.rejectedEntries ?? 0
        cache?.abstract([(kernel.sourceDirectory, "{kernel-source}"), (kernel.outputDirectory, "{kernel-output}"),
                         (options.tree.path, "{tree}")])
        let identity = try await ResultCache.compilerIdentity(compiler, environment: env)
        let local = compiler.local
        var sanityChecker = SanityChecker(kernel: kernel, compiler: local, environment: env, scratch: scratch,
                                          cache: cache, compilerIdentity: identity)
        sanityChecker.slots = options.slots
        let sanity = try await sanityChecker.runAll(config: kernel.config)
        clock.lap("sanity")
        try SanityChecker.requirePassed(sanity, kernel: kernel)

        let flags = try await Toolchain.flags(options, compiler: local, identity: identity)
        var runner = CompileRunner(compiler: compiler, flags: flags, scratch: scratch)
        runner.slots = options.slots
        runner.outOfTreeDirectory = options.tree.outOfTreeDirectory
        let presence = try await HeaderPresenceStage(runner: runner, jobs: options.jobs, cache: cache, identity: identity)
            .run(options.tree.headerPresenceTests, progress: progress)
        clock.lap("flags+headers")
        let uts = try await runner.utsRelease(cache: cache, identity: identity)
        try plan.requireDelegation(options)

        let compiled = try await CompileStage(runner: runner, presence: presence, cache: cache, identity: identity,
                                              jobs: options.jobs, grouping: options.grouping)
            .run(plan.units, progress: progress, clock: &clock)
        var results = EvaluationStage(kernel: kernel, environment: env, outOfTreeDirectory: options.tree.outOfTreeDirectory)
            .results(plan.planned, outcomes: compiled.byTest)
        if let delegate = ConftestScriptDelegate(tree: options.tree, kernel: kernel, compiler: local.uncached, flags: flags,
                                                 environment: env, jobs: options.jobs, scratch: scratch, slots: options.slots) {
            for r in try await delegate.run(plan.delegated, presence: presence, utsRelease: uts, progress: progress) { results[r.name] = r }
        }
        cache?.flush()

        var requests: [String: [String]] = [:]
        for (header, list) in options.tree.requests { requests[header.rawValue] = list }
        return ProbeReport(
            kernel: kernel, treePath: options.tree.path, driverVersion: options.tree.driverVersion, catalogMatching: plan.matching,
            compiler: compiler, flags: flags, sanity: sanity, headerPresence: presence, headerList: options.tree.headerList, utsRelease: uts,
            tests: plan.requested.compactMap { results[$0] }, requests: requests, patchFiles: options.tree.patchFiles,
            seconds: clock.total, phaseSeconds: clock.phases, compiles: compiled.compiledCount, compilerRuns: runner.runs.value,
            cachedCompiles: compiled.cachedCount, unionCompiles: compiled.unionCount,
            cacheRejected: (cache?.rejectedEntries ?? 0) - rejectedBefore
        )
    }
}

/// Seconds per phase, for --verbose and benchmarks.
struct PhaseClock {
    private let start = Date()
    private var mark = Date()
    private(set) var phases: [String: Double] = [:]

    mutating func lap(_ name: String) {
        phases[name] = Date().timeIntervalSince(mark)
        mark = Date()
    }

    var total: Double { Date().timeIntervalSince(start) }
}

/// A thread-safe counter for progress.
final class Counter: Sendable {
    private let count = Mutex(0)

    var value: Int { count.withLock { $0 } }

    func increment() -> Int {
        count.withLock { value in
            value += 1
            return value
        }
    }
}
