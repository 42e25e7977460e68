import Foundation
import KernelTree
import NVBuildSupport

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
    public var lines: [String]
    public var reasoning: String
    public var outcomes: [ProbeOutcome]
    public var note: String?
    /// Set when a failure looks unrelated to the feature (a missing header the test did not guard).
    public var suspicious: String?
}

/// Everything a probe found, in a form the CLI prints and the writer writes.
public struct ProbeReport: Sendable, Codable {
    public var kernel: KernelTarget
    public var treePath: String
    public var driverVersion: String?
    public var compiler: CompilerCommand
    public var flags: [String]
    public var sanity: [SanityResult]
    public var headerPresence: [HeaderPresenceResult]
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

    public struct HeaderPresenceResult: Sendable, Equatable, Codable {
        public var header: String
        public var macro: String
        public var present: Bool
        public var line: String { "#\(present ? "define" : "undef") \(macro)" }
    }

    public func test(_ name: String) -> TestResult? { tests.first { $0.name == name } }

    public var delegated: [String] { tests.filter { $0.origin == .delegated }.map(\.name) }
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
    /// Runs the whole probe. Throws UserError for environment problems and failed sanity checks.
    public static func run(_ options: ProbeOptions, progress: @escaping ProbeProgress = { _, _, _ in }) async throws -> ProbeReport {
        let start = Date()
        var phases: [String: Double] = [:]
        var mark = Date()
        func lap(_ name: String) {
            phases[name] = Date().timeIntervalSince(mark)
            mark = Date()
        }
        let kernel = options.kernel
        let env = options.environment
        let compiler = ConftestFlags.compilerCommand(kernel: kernel, override: options.compilerOverride, environment: env)
        guard compiler.compilerPath(environment: env) != nil else {
            throw UserError(.environment, "the compiler '\(compiler.compiler)' (from \(options.compilerOverride != nil ? "--cc" : env["CC"] != nil ? "CC" : "CONFIG_CC_VERSION_TEXT of \(kernel.configPath)")) is not installed; install it (for Debian kernels: apt-get install gcc-12) or pass --cc")
        }
        guard FileManager.default.fileExists(atPath: kernel.autoconfPath) || FileManager.default.fileExists(atPath: ConftestFlags.autoconfPath(kernel: kernel)) else {
            throw UserError(.environment, "\(kernel.autoconfPath): missing; the kernel tree is not configured — install the kernel's headers package (apt-get install linux-headers-\(kernel.release))")
        }
        let config = KernelConfig(parsing: (try? String(contentsOfFile: kernel.configPath, encoding: .utf8)) ?? "")

        let scratch = FileManager.default.temporaryDirectory.path + "/nvbuild-probe-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }

        // Sanity checks first: a failing one stops the probe with its reason.
        progress(.sanity, 0, SanityCheck.allCases.count)
        let cache = options.cache
        cache?.abstract([(kernel.sourceDirectory, "{kernel-source}"), (kernel.outputDirectory, "{kernel-output}"),
                         (options.tree.path, "{tree}")])
        let identity = try await ResultCache.compilerIdentity(compiler, environment: env)
        let checker = SanityChecker(kernel: kernel, compiler: compiler, environment: env, scratch: scratch,
                                    cache: cache, compilerIdentity: identity)
        let sanity = try await checker.runAll(config: config)
        lap("sanity")
        if let failed = sanity.first(where: { $0.failure != nil }) {
            throw UserError(.failed, "\(failed.check.rawValue) failed for \(kernel.release): \(failed.failure!)")
        }

        let facts: ConftestFlags.CompilerFacts
        let factsKey = "compiler-facts\u{0}" + identity
        if let hit = cache?.lookup(step: factsKey), let decoded = try? JSONDecoder().decode(ConftestFlags.CompilerFacts.self, from: Data(hit.output.utf8)) {
            facts = decoded
        } else {
            facts = try await ConftestFlags.CompilerFacts.query(compiler: compiler)
            if let encoded = try? JSONEncoder().encode(facts) {
                cache?.store(step: factsKey, ok: true, output: String(decoding: encoded, as: UTF8.self), dependencies: [])
            }
        }
        let autoconf = ConftestFlags.autoconfPath(kernel: kernel)
        let flags = ConftestFlags.baseFlags(kernel: kernel, compiler: facts, autoconf: autoconf, environment: env)
            + ConftestFlags.kbuildFlags(tree: options.tree, kernel: kernel, environment: env)
        let runner = CompileRunner(compiler: compiler, flags: flags, scratch: scratch)
        let jobs = max(1, options.jobs)

        // Header presence, in header-presence-tests.mk order.
        let headers = options.tree.headerPresenceTests
        progress(.headers, 0, headers.count)
        let together = try await runner.headersPresent(headers, cache: cache, identity: identity)
        let presence = try await concurrentMap(Array(headers.enumerated()), limit: jobs) { item in
            let (index, header) = item
            let present: Bool
            if let decided = together[index] {
                present = decided
            } else {
                present = try await runner.headerPresent(header, index: index, cache: cache, identity: identity).present
            }
            return ProbeReport.HeaderPresenceResult(header: header, macro: ConftestRequests.presenceMacro(for: header), present: present)
        }
        progress(.headers, headers.count, headers.count)
        lap("flags+headers")
        let uts = try await runner.utsRelease(cache: cache, identity: identity)
        let preamble = ProbeSource.preamble(headerPresenceLines: presence.map(\.line))

        // Plan: catalog definitions, and the names the catalog lacks.
        var requested = options.tree.allTests
        if let only = options.onlyTests { requested = requested.filter { only.contains($0) } }
        var planned: [(String, TestDefinition)] = []
        var missing: [String] = []
        for name in requested {
            if let def = options.catalog.definition(name, release: options.tree.driverVersion) {
                planned.append((name, def))
            } else {
                missing.append(name)
            }
        }
        if options.strict && !missing.isEmpty {
            throw UserError(.failed, "the catalog has no definition for \(missing.count) requested test(s): \(missing.joined(separator: ", ")) (--strict forbids delegating them to the tree's conftest.sh)")
        }
        if !missing.isEmpty && options.tree.conftestScript == nil {
            throw UserError(.failed, "the catalog has no definition for \(missing.joined(separator: ", ")) and \(options.tree.path) has no conftest.sh to delegate them to")
        }

        // Compile jobs: one per probe of each definition.
        var units: [CompileUnit] = []
        for (name, def) in planned {
            for part in ProbeSource.units(of: def) {
                units.append(CompileUnit(test: name, probe: part.name, includes: part.includes, body: part.body,
                                         files: def.files, shape: part.shape))
            }
        }
        let total = units.count
        let counter = Counter()
        progress(.tests, 0, total)
        let cacheContext = ResultCache.Context(compiler: compiler, compilerIdentity: identity, flags: flags)
        var outcomes = [ProbeOutcome?](repeating: nil, count: units.count)
        var uncached: [Int] = []
        // Cache keys hold only the header-presence results a unit can read: NV_*_PRESENT
        // macros are referenced by the tests' own text, never by kernel headers. A tree
        // whose header list differs therefore still reuses every unaffected result.
        func keySource(_ u: CompileUnit) -> String {
            let text = u.includes + u.body + u.files.map(\.content).joined()
            let relevant = presence.filter { text.contains($0.macro) }.map(\.line)
            return u.source(preamble: ProbeSource.preamble(headerPresenceLines: relevant))
        }
        for (i, u) in units.enumerated() {
            if let cache, let hit = cache.lookup(context: cacheContext, source: keySource(u), files: u.files) {
                outcomes[i] = ProbeOutcome(probe: u.probe, compiled: hit.compiled, diagnostics: hit.diagnostics,
                                           command: runner.compileCommand(directory: "\(scratch)/\(u.test).\(u.probe)"), cached: true)
                progress(.tests, counter.increment(), total)
            } else {
                uncached.append(i)
            }
        }
        lap("plan+cache")
        var computed: [Int: UnitResult] = [:]
        if options.grouping && uncached.count > 1 {
            // Union translation units; units they cannot show are compiled alone as soon as
            // that is known, all sharing the job slots (union rounds first).
            var slotted = runner
            slotted.slots = JobSlots(jobs)
            let solo = slotted
            slotted.urgent = true
            let urgent = slotted
            let unionCompiler = UnionCompiler(runner: urgent, preamble: preamble, includeDirectories: CompileRunner.bracketSearchOrder(flags),
                                              systemDirectories: Set(CompileRunner.systemIncludeDirectories(flags)))
            let pending = uncached.map { units[$0] }
            try await withThrowingTaskGroup(of: (Int, UnitResult).self) { group in
                for try await event in unionCompiler.events(pending) {
                    switch event {
                    case .kept(let local, let r):
                        computed[uncached[local]] = r
                        progress(.tests, counter.increment(), total)
                    case .leftOver(let local):
                        group.addTask {
                            let r = try await solo.compile(pending[local], preamble: preamble, id: "solo\(local)")
                            progress(.tests, counter.increment(), total)
                            return (local, r)
                        }
                    }
                }
                for try await (local, r) in group { computed[uncached[local]] = r }
            }
        } else {
            let pending = uncached.map { units[$0] }
            let results = try await concurrentMap(Array(pending.enumerated()), limit: jobs) { item in
                let r = try await runner.compile(item.element, preamble: preamble, id: "solo\(item.offset)")
                progress(.tests, counter.increment(), total)
                return r
            }
            for (i, r) in zip(uncached, results) { computed[i] = r }
        }
        lap("compile")
        for (i, r) in computed {
            let u = units[i]
            // A compile stopped by a missing header writes no dependency list; such
            // outcomes are cheap to recompute and are not cached.
            let absent = r.compiled || !r.dependencies.isEmpty ? [] : missingHeaderPaths(r.diagnostics, flags: flags)
            if let cache, r.compiled || !r.dependencies.isEmpty || !absent.isEmpty {
                cache.store(context: cacheContext, source: keySource(u), files: u.files,
                            compiled: r.compiled, diagnostics: r.diagnostics, dependencies: r.dependencies, absent: absent)
            }
            outcomes[i] = ProbeOutcome(probe: u.probe, compiled: r.compiled, diagnostics: r.diagnostics,
                                       command: runner.compileCommand(directory: "\(scratch)/\(u.test).\(u.probe)"), fromUnion: r.fromUnion)
        }
        lap("store")
        var byTest: [String: [String: ProbeOutcome]] = [:]
        for (u, outcome) in zip(units, outcomes) { byTest[u.test, default: [:]][u.probe] = outcome! }
        let compiledCount = outcomes.filter { $0?.cached == false }.count
        let cachedCount = outcomes.filter { $0?.cached == true }.count

        let symversPaths = [kernel.moduleSymversPath] + ["/usr/src/nvidia/nvidia-public/Module.symvers"].filter { FileManager.default.fileExists(atPath: $0) }
        // Only lines naming a requested symbol matter; the kernel's list has ~30,000.
        var wanted = Set<String>()
        for (_, def) in planned {
            if case .exportPresent(let s) = def.check { wanted.insert(s) }
            if case .exportGPL(let s) = def.check { wanted.insert(s) }
        }
        let symvers = symversPaths.flatMap { Evaluation.symversLines(at: $0, naming: wanted) }
        var results: [String: TestResult] = [:]
        for (name, def) in planned {
            let testOutcomes = byTest[name] ?? [:]
            let verdict = Evaluation.verdict(for: def, outcomes: testOutcomes, symvers: symvers, environment: env) { d in
                candidatePaths(d.symversCandidates, kernel: kernel)
            }
            let ordered = ProbeSource.probes(of: def).compactMap { testOutcomes[$0.name] }
            results[name] = TestResult(name: name, origin: .catalog, lines: verdict.lines, reasoning: verdict.reasoning,
                                       outcomes: ordered, note: def.note,
                                       suspicious: suspiciousFailure(ordered))
        }

        // Tests the catalog lacks: the tree's own conftest.sh, one call per test.
        if !missing.isEmpty, let script = options.tree.conftestScript {
            progress(.delegated, 0, missing.count)
            let headersH = ConftestOutput.headersH(presence, utsRelease: uts)
            let delegateDir = scratch + "/delegate"
            try FileManager.default.createDirectory(atPath: delegateDir + "/conftest", withIntermediateDirectories: true)
            try Data(headersH.utf8).write(to: URL(fileURLWithPath: delegateDir + "/conftest/headers.h"))
            // conftest.sh works in its own directory and reads conftest/headers.h there: give it a
            // directory that mirrors the tree (symlinks) but holds this probe's headers.h.
            let treeDir = URL(fileURLWithPath: script).deletingLastPathComponent().path
            for entry in try FileManager.default.contentsOfDirectory(atPath: treeDir) where entry != "conftest" {
                try FileManager.default.createSymbolicLink(atPath: delegateDir + "/" + entry, withDestinationPath: treeDir + "/" + entry)
            }
            // The tree's include paths point into the mirror, where conftest.sh writes its side files.
            let treePrefix = "-I" + options.tree.path
            let cflags = flags.map { $0.hasPrefix(treePrefix) ? "-I" + delegateDir + $0.dropFirst(treePrefix.count) : $0 }
                .joined(separator: " ")
            let delegated = try await concurrentMap(missing, limit: jobs) { name in
                let command = ["/bin/sh", delegateDir + "/conftest.sh", compiler.description, kernel.arch,
                               kernel.sourceDirectory, kernel.outputDirectory, "compile_tests", cflags, name]
                let out = try await ProcessRunner(environment: env).run(command, workingDirectory: delegateDir)
                let lines = out.standardOutput.split(separator: "\n").map(String.init)
                return TestResult(name: name, origin: .delegated, lines: lines,
                                  reasoning: "not in the catalog: computed by \(script)",
                                  outcomes: [ProbeOutcome(probe: "conftest.sh", compiled: out.succeeded, diagnostics: out.standardError, command: command)],
                                  note: nil, suspicious: out.succeeded ? nil : "conftest.sh exited \(out.exitStatus): \(out.standardError.prefix(200))")
            }
            let failed = delegated.filter { $0.outcomes.first?.compiled == false }
            if !failed.isEmpty {
                throw UserError(.failed, "the tree's conftest.sh could not compute \(failed.map(\.name).joined(separator: ", ")) (\(failed[0].outcomes[0].diagnostics.trimmingCharacters(in: .whitespacesAndNewlines))); nvbuild's catalog lacks them too")
            }
            for r in delegated { results[r.name] = r }
            progress(.delegated, missing.count, missing.count)
        }

        cache?.flush()
        var requests: [String: [String]] = [:]
        for (header, list) in options.tree.requests { requests[header.rawValue] = list }
        return ProbeReport(
            kernel: kernel, treePath: options.tree.path, driverVersion: options.tree.driverVersion,
            compiler: compiler, flags: flags, sanity: sanity, headerPresence: presence, utsRelease: uts,
            tests: requested.compactMap { results[$0] }, requests: requests, patchFiles: options.tree.patchFiles,
            seconds: Date().timeIntervalSince(start), phaseSeconds: phases, compiles: compiledCount, compilerRuns: runner.runs.value,
            cachedCompiles: cachedCount, unionCompiles: outcomes.filter { $0?.fromUnion == true }.count
        )
    }

    /// A compile our own text stopped with `#include <x>` of a missing header: its outcome
    /// holds while x stays missing from every include directory.
    static func missingHeaderPaths(_ diagnostics: String, flags: [String]) -> [String] {
        for line in diagnostics.split(separator: "\n") where line.hasPrefix("conftest.c:") && line.contains(": fatal error: ") && line.hasSuffix(": No such file or directory") {
            guard let r = line.range(of: ": fatal error: ") else { continue }
            let header = line[r.upperBound...].dropLast(": No such file or directory".count)
            return CompileRunner.includeDirectories(flags).map { $0 + "/" + header }
        }
        return []
    }

    static func candidatePaths(_ patterns: [String], kernel: KernelTarget) -> [String] {
        var paths: [String] = []
        for pattern in patterns {
            let p = pattern.replacingOccurrences(of: "{output}", with: kernel.outputDirectory)
                .replacingOccurrences(of: "{arch}", with: kernel.arch)
                .replacingOccurrences(of: "{release}", with: kernel.release)
            if p.contains("*") {
                var g = glob_t()
                if glob(p, 0, nil, &g) == 0 {
                    for i in 0..<Int(g.gl_pathc) { if let c = g.gl_pathv[i] { paths.append(String(cString: c)) } }
                }
                globfree(&g)
            } else {
                paths.append(p)
            }
        }
        return paths
    }

    /// A compile failure caused by a header that does not exist on this kernel,
    /// in a test that did not guard the include, decides the result for the
    /// wrong reason: say so.
    static func suspiciousFailure(_ outcomes: [ProbeOutcome]) -> String? {
        for outcome in outcomes where !outcome.compiled {
            for line in outcome.diagnostics.split(separator: "\n") where line.contains("No such file or directory") && line.contains("fatal error") {
                return "a probe failed because a header is missing (\(line.split(separator: ":").dropFirst(4).joined(separator: ":").trimmingCharacters(in: .whitespaces))), not because of the feature it tests"
            }
        }
        return nil
    }
}

/// A thread-safe counter for progress.
final class Counter: @unchecked Sendable {
    private var count = 0
    private let lock = NSLock()

    var value: Int {
        lock.lock()
        defer { lock.unlock() }
        return count
    }

    func increment() -> Int {
        lock.lock()
        defer { lock.unlock() }
        count += 1
        return count
    }
}
