import Foundation
import KernelTree
import NVBuildSupport

// The stages of a probe, in the order Prober.run composes them.

/// The compiler and the flags every conftest compile gets.
enum Toolchain {
    /// The compiler the probe uses, and the configured-tree check: environment problems,
    /// reported before anything runs.
    static func require(_ options: ProbeOptions) throws -> CompilerCommand {
        let kernel = options.kernel
        let env = options.environment
        let compiler = ConftestFlags.compilerCommand(kernel: kernel, override: options.compilerOverride, environment: env).launched(options.launch)
        guard compiler.compilerPath(environment: env) != nil else {
            throw UserError(.environment, "the compiler '\(compiler.compiler)' (from \(options.compilerOverride != nil ? "--cc" : env["CC"] != nil ? "CC" : "CONFIG_CC_VERSION_TEXT of \(kernel.configPath)")) is not installed; install it (for Debian kernels: apt-get install gcc-12) or pass --cc")
        }
        // Launchers are run too (never for the identity): one that is missing is named here.
        for launcher in compiler.launchers where !launcher.hasPrefix("-") && ProcessRunner.lookup(launcher, environment: env) == nil {
            throw UserError(.environment, "the compiler launcher '\(launcher)' (from \(options.compilerOverride != nil ? "--cc" : "CC")) is not installed; install it or name the compiler without it")
        }
        guard FileManager.default.fileExists(atPath: kernel.autoconfPath) || FileManager.default.fileExists(atPath: ConftestFlags.autoconfPath(kernel: kernel)) else {
            throw UserError(.environment, "\(kernel.autoconfPath): missing; the kernel tree is not configured — install the kernel's headers package (apt-get install linux-headers-\(kernel.release))")
        }
        return compiler
    }

    /// conftest.sh's build_cflags and the tree's Kbuild flags; the compiler queries they
    /// need are cached under the compiler's identity.
    static func flags(_ options: ProbeOptions, compiler: CompilerCommand, identity: String) async throws -> [String] {
        let facts: ConftestFlags.CompilerFacts
        let factsKey = "compiler-facts\u{0}" + identity
        if let hit = options.cache?.lookup(step: factsKey), let decoded = try? JSONDecoder().decode(ConftestFlags.CompilerFacts.self, from: Data(hit.output.utf8)) {
            facts = decoded
        } else {
            // Two quick compiler runs, one after the other: one slot of the shared budget.
            @Sendable func query() async throws -> ConftestFlags.CompilerFacts { try await ConftestFlags.CompilerFacts.query(compiler: compiler) }
            if let slots = options.slots { facts = try await slots.run(query) } else { facts = try await query() }
            if let encoded = try? JSONEncoder().encode(facts) {
                options.cache?.store(step: factsKey, ok: true, output: String(decoding: encoded, as: UTF8.self), dependencies: [])
            }
        }
        let kernel = options.kernel
        return ConftestFlags.baseFlags(kernel: kernel, compiler: facts, autoconf: ConftestFlags.autoconfPath(kernel: kernel), environment: options.environment)
            + ConftestFlags.kbuildFlags(tree: options.tree, kernel: kernel, environment: options.environment)
    }
}

/// What the tree requests: catalog definitions and their compile units, and the names to
/// delegate to the tree's conftest.sh: those the catalog lacks (*unknown*) and those whose
/// conftest.sh arm no definition was verified against (*changed upstream*).
struct ProbePlan {
    var requested: [String]
    var matching: CatalogMatching
    var planned: [(name: String, definition: TestDefinition, arm: ConftestArms.Arm?)] = []
    /// Every name to delegate, in request order, with its reason and arm.
    var delegated: [(name: String, reason: Delegation, arm: ConftestArms.Arm?, candidates: [TestDefinition])] = []
    /// Requested names conftest.sh has no arm for.
    var withoutArm: [String] = []
    /// One per probe of each definition.
    var units: [CompileUnit] = []

    var missing: [String] { delegated.map(\.name) }

    init(_ options: ProbeOptions) {
        requested = options.tree.allTests
        if let only = options.onlyTests { requested = requested.filter { only.contains($0) } }
        let arms = options.tree.arms
        if let arms {
            matching = .fingerprints(script: arms.path)
        } else if let script = options.tree.conftestScript {
            matching = .names(reason: "\(script) has no compile_test case arms to fingerprint")
        } else {
            matching = .names(reason: "\(options.tree.path) has no conftest.sh")
        }
        for name in requested {
            switch options.catalog.choose(name, arms: arms, release: options.tree.driverVersion) {
            case .definition(let def, let arm):
                planned.append((name, def, arm))
                for part in ProbeSource.units(of: def) {
                    units.append(CompileUnit(test: name, probe: part.name, includes: part.includes, body: part.body,
                                             files: def.files, shape: part.shape))
                }
            case .delegate(let reason, let arm, let candidates):
                delegated.append((name, reason, arm, candidates))
            case .noArm:
                withoutArm.append(name)
            }
        }
    }

    /// Fails when names may not, or cannot, be delegated.
    func requireDelegation(_ options: ProbeOptions) throws {
        if !withoutArm.isEmpty, let script = options.tree.conftestScript {
            throw UserError(.failed, "\(script) has no case arm for \(withoutArm.joined(separator: ", ")), which the tree's Kbuild requests; its own conftest flow would stop with \"unknown conftest\" too (check --modules or the tree's Kbuild fragments)")
        }
        let changed = delegated.filter { $0.reason == .changedUpstream }.map(\.name)
        let unknown = delegated.filter { $0.reason == .unknown }.map(\.name)
        if options.strict && !(changed.isEmpty && unknown.isEmpty) {
            var parts: [String] = []
            if !changed.isEmpty { parts.append("\(changed.count) changed upstream (their conftest.sh arms match no catalog definition's Upstream: fingerprints): \(changed.joined(separator: ", "))") }
            if !unknown.isEmpty { parts.append("\(unknown.count) not in the catalog: \(unknown.joined(separator: ", "))") }
            throw UserError(.failed, "--strict forbids delegating requested tests to the tree's conftest.sh: " + parts.joined(separator: "; "))
        }
        if !delegated.isEmpty && options.tree.conftestScript == nil {
            throw UserError(.failed, "the catalog has no definition for \(missing.joined(separator: ", ")) and \(options.tree.path) has no conftest.sh to delegate them to")
        }
    }
}

extension SanityChecker {
    /// The first failed check stops the probe with its reason.
    static func requirePassed(_ results: [SanityResult], kernel: KernelTarget) throws {
        if let failed = results.first(where: { $0.failure != nil }) {
            throw UserError(.failed, "\(failed.check.rawValue) failed for \(kernel.release): \(failed.failure!)")
        }
    }
}

/// Header presence, in header-presence-tests.mk order: most headers decided together,
/// the rest one by one as test_kernel_header does.
struct HeaderPresenceStage {
    var runner: CompileRunner
    var jobs: Int
    var cache: ResultCache?
    var identity: String

    func run(_ headers: [String], progress: ProbeProgress) async throws -> [ProbeReport.HeaderPresenceResult] {
        progress(.headers, 0, headers.count)
        let together = try await runner.headersPresent(headers, cache: cache, identity: identity)
        let runner = runner, cache = cache, identity = identity
        let presence = try await concurrentMap(Array(headers.enumerated()), limit: max(1, jobs)) { item in
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
        return presence
    }
}

/// Every compile unit's outcome: from the cache, else compiled (in union translation
/// units where that provably gives each unit its own outcome, otherwise alone), then stored.
struct CompileStage {
    var runner: CompileRunner
    var presence: [ProbeReport.HeaderPresenceResult]
    var cache: ResultCache?
    var identity: String
    var jobs: Int
    var grouping: Bool

    struct Outcomes {
        var byTest: [String: [String: ProbeOutcome]]
        var compiledCount: Int
        var cachedCount: Int
        var unionCount: Int
    }

    func run(_ units: [CompileUnit], progress: @escaping ProbeProgress, clock: inout PhaseClock) async throws -> Outcomes {
        let preamble = ProbeSource.preamble(headerPresenceLines: presence.map(\.line))
        let counter = Counter()
        let total = units.count
        progress(.tests, 0, total)
        let context = ResultCache.Context(compiler: runner.compiler, compilerIdentity: identity, flags: runner.flags)
        var outcomes = [ProbeOutcome?](repeating: nil, count: units.count)
        var uncached: [Int] = []
        for (i, u) in units.enumerated() {
            if let cache, let hit = cache.lookup(context: context, source: keySource(u), files: u.files) {
                outcomes[i] = ProbeOutcome(probe: u.probe, compiled: hit.compiled, diagnostics: hit.diagnostics,
                                           command: command(u), cached: true)
                progress(.tests, counter.increment(), total)
            } else {
                uncached.append(i)
            }
        }
        clock.lap("plan+cache")
        let computed = try await compile(uncached.map { units[$0] }, preamble: preamble) { progress(.tests, counter.increment(), total) }
        clock.lap("compile")
        for (local, r) in computed {
            let i = uncached[local]
            let u = units[i]
            // A compile stopped by a missing header writes no dependency list; such
            // outcomes are cheap to recompute and are not cached.
            let absent = r.compiled || !r.dependencies.isEmpty ? [] : Self.missingHeaderPaths(r.diagnostics, flags: runner.flags)
            if let cache, r.compiled || !r.dependencies.isEmpty || !absent.isEmpty {
                cache.store(context: context, source: keySource(u), files: u.files,
                            compiled: r.compiled, diagnostics: r.diagnostics, dependencies: r.dependencies, absent: absent)
            }
            outcomes[i] = ProbeOutcome(probe: u.probe, compiled: r.compiled, diagnostics: r.diagnostics,
                                       command: command(u), fromUnion: r.fromUnion)
        }
        clock.lap("store")
        var byTest: [String: [String: ProbeOutcome]] = [:]
        for (u, outcome) in zip(units, outcomes) { byTest[u.test, default: [:]][u.probe] = outcome! }
        return Outcomes(byTest: byTest, compiledCount: outcomes.filter { $0?.cached == false }.count,
                        cachedCount: outcomes.filter { $0?.cached == true }.count,
                        unionCount: outcomes.filter { $0?.fromUnion == true }.count)
    }

    /// The scheduler: results by index into `pending`.
    private func compile(_ pending: [CompileUnit], preamble: String, done: @escaping @Sendable () -> Void) async throws -> [Int: UnitResult] {
        var computed: [Int: UnitResult] = [:]
        guard grouping && pending.count > 1 else {
            let runner = runner
            let results = try await concurrentMap(Array(pending.enumerated()), limit: max(1, jobs)) { item in
                let r = try await runner.compile(item.element, preamble: preamble, id: "solo\(item.offset)")
                done()
                return r
            }
            for (i, r) in results.enumerated() { computed[i] = r }
            return computed
        }
        // Union translation units; units they cannot show are compiled alone as soon as
        // that is known, all sharing the job slots (union rounds first).
        var slotted = runner
        slotted.slots = runner.slots ?? JobSlots(max(1, jobs))
        let solo = slotted
        slotted.urgent = true
        let unionCompiler = UnionCompiler(runner: slotted, preamble: preamble, includeDirectories: CompileRunner.bracketSearchOrder(runner.flags),
                                          systemDirectories: Set(CompileRunner.systemIncludeDirectories(runner.flags)))
        try await withThrowingTaskGroup(of: (Int, UnitResult).self) { group in
            for try await event in unionCompiler.events(pending) {
                switch event {
                case .kept(let local, let r):
                    computed[local] = r
                    done()
                case .leftOver(let local):
                    group.addTask {
                        let r = try await solo.compile(pending[local], preamble: preamble, id: "solo\(local)")
                        done()
                        return (local, r)
                    }
                }
            }
            for try await (local, r) in group { computed[local] = r }
        }
        return computed
    }

    /// Cache keys hold only the header-presence results a unit can read: NV_*_PRESENT
    /// macros are referenced by the tests' own text, never by kernel headers. A tree
    /// whose header list differs therefore still reuses every unaffected result.
    private func keySource(_ u: CompileUnit) -> String {
        let text = u.includes + u.body + u.files.map(\.content).joined()
        let relevant = presence.filter { text.contains($0.macro) }.map(\.line)
        return u.source(preamble: ProbeSource.preamble(headerPresenceLines: relevant))
    }

    private func command(_ u: CompileUnit) -> [String] {
        runner.compileCommand(directory: "\(runner.scratch)/\(u.test).\(u.probe)")
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
}

/// Outcomes and kernel facts (Module.symvers, environment) turned into each test's lines.
struct EvaluationStage {
    var kernel: KernelTarget
    var environment: [String: String]
    /// The tree's conftest.sh NVIDIA_OOT_PATH: its Module.symvers is read too when the folder exists.
    var outOfTreeDirectory: String?

    func results(_ planned: [(name: String, definition: TestDefinition, arm: ConftestArms.Arm?)], outcomes byTest: [String: [String: ProbeOutcome]]) -> [String: TestResult] {
        let symversPaths = [kernel.moduleSymversPath] + [outOfTreeDirectory].compactMap { directory in
            directory.flatMap { FileManager.default.fileExists(atPath: $0) ? $0 + "/Module.symvers" : nil }
        }
        // Only entries naming a requested symbol matter; the kernel's list has ~30,000.
        var wanted = Set<String>()
        for (_, def, _) in planned {
            if case .exportPresent(let s) = def.check { wanted.insert(s) }
            if case .exportGPL(let s) = def.check { wanted.insert(s) }
            if case .exportPlain(let s) = def.check { wanted.insert(s) }
        }
        let symvers = symversPaths.flatMap { ModuleSymvers.exports(naming: wanted, inFileAt: $0) }
        // An export check with its own `Symvers:` reads exactly those files (an older
        // conftest.sh reads only the kernel's), each read once.
        var ownSymvers: [[String]: [SymbolExport]] = [:]
        var results: [String: TestResult] = [:]
        for (name, def, arm) in planned {
            let testOutcomes = byTest[name] ?? [:]
            var exports = symvers
            switch def.check {
            case .exportPresent, .exportGPL, .exportPlain:
                guard !def.symversCandidates.isEmpty else { break }
                let paths = Self.candidatePaths(def.symversCandidates, kernel: kernel).filter { FileManager.default.fileExists(atPath: $0) }
                if let cached = ownSymvers[paths] {
                    exports = cached
                } else {
                    exports = paths.flatMap { ModuleSymvers.exports(naming: wanted, inFileAt: $0) }
                    ownSymvers[paths] = exports
                }
            default: break
            }
            let verdict = Evaluation.verdict(for: def, outcomes: testOutcomes, symvers: exports, environment: environment) { d in
                Self.candidatePaths(d.symversCandidates, kernel: kernel)
            }
            let ordered = ProbeSource.probes(of: def).compactMap { testOutcomes[$0.name] }
            var result = TestResult(name: name, origin: .catalog, lines: verdict.lines, reasoning: verdict.reasoning,
                                    outcomes: ordered, note: def.note, suspicious: Self.suspiciousFailure(ordered, definition: def))
            result.definition = def.location
            result.upstreamArm = arm.map { .init($0) }
            results[name] = result
        }
        return results
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
    /// wrong reason: say so, at the definition.
    static func suspiciousFailure(_ outcomes: [ProbeOutcome], definition: TestDefinition) -> Diagnostic? {
        for outcome in outcomes where !outcome.compiled {
            for line in outcome.diagnostics.split(separator: "\n") where line.contains("No such file or directory") && line.contains("fatal error") {
                let missing = line.split(separator: ":").dropFirst(4).joined(separator: ":").trimmingCharacters(in: .whitespaces)
                return .warning("\(definition.name): a probe failed because a header is missing (\(missing)), not because of the feature it tests",
                                file: definition.location.file, line: definition.location.line,
                                remedy: "guard the include with the header's presence macro (Include: HEADER if NV_…_PRESENT)")
            }
        }
        return nil
    }
}
