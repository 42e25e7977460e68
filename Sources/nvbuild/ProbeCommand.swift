import ArgumentParser
import Conftest
import Foundation
import KernelTree
import NVBuildSupport
import Synchronization

struct ProbeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Run the conftest checks a driver tree requests and write its conftest/ headers.",
        discussion: """
            Replaces the driver's conftest.sh and its Kbuild conftest phase: reads the tree's \
            NV_CONFTEST_*_COMPILE_TESTS requests and its header-presence list (wherever the \
            release keeps it), runs the sanity checks, the header-presence tests and every compile \
            test (in parallel, cached), and writes conftest/ exactly as the tree's Kbuild would.

            A catalog definition is used only for a test whose case arm in the tree's conftest.sh \
            has a fingerprint the definition lists (Upstream:); other tests are delegated to that \
            conftest.sh and reported as unknown or changed upstream. A tree without a conftest.sh \
            arm table is matched by test name and Releases:, and the summary says so.

            Examples:
              nvbuild probe --tree kernel-open --kernel 6.12.117+deb12-amd64
              nvbuild probe explain NV_VM_FLAGS_SET_PRESENT --tree kernel-open --kernel 6.1.0-56-amd64
              nvbuild probe diff --tree kernel-open --kernel 6.1.0-56-amd64 --kernel 6.12.117+deb12-amd64
              nvbuild probe list --json
            """,
        subcommands: [RunProbe.self, ExplainProbe.self, ListCatalog.self, DiffProbe.self, FingerprintProbe.self],
        defaultSubcommand: RunProbe.self
    )
}

/// Options every probing subcommand shares.
struct ProbeOptionsGroup: ParsableArguments {
    @Option(help: "The driver tree (NVIDIA's kernel-open/ or one shaped like it).")
    var tree: String

    @Option(help: "Parallel compile jobs (default: the number of cores).")
    var jobs: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "Compiler command (default: CC, else the kernel's CONFIG_CC_VERSION_TEXT compiler).")
    var cc: String?

    @Option(help: "Modules to probe for, like NV_KERNEL_MODULES (space- or comma-separated).")
    var modules: String?

    @Option(help: "Modules to leave out, like NV_EXCLUDE_KERNEL_MODULES.")
    var exclude: String?

    @OptionGroup var catalogAndCache: CatalogCacheOptions

    @Flag(help: ArgumentHelp("Compile every probe in its own translation unit (no grouping), as conftest.sh does.", visibility: .hidden))
    var noGrouping = false

    @Flag(help: "Fail instead of delegating a test to the tree's conftest.sh: one the catalog lacks, or one whose conftest.sh arm changed upstream (matches no definition's Upstream: fingerprint).")
    var strict = false

    var settings: ProbeSettings {
        ProbeSettings(jobs: jobs, compiler: cc, modules: modules, exclude: exclude, catalog: catalogAndCache.catalog,
                      cacheDir: catalogAndCache.cacheDir, noCache: catalogAndCache.noCache, strict: strict, grouping: !noGrouping)
    }

    func loadCatalog() throws -> Catalog { try settings.loadCatalog() }

    func options(kernel: KernelTarget, only: Set<String>? = nil) throws -> ProbeOptions {
        try settings.options(tree: tree, kernel: kernel, only: only)
    }
}

/// Where the catalog and the result cache are: shared by `probe` and `build`, which probes first.
struct CatalogCacheOptions: ParsableArguments {
    @Option(help: "Catalog directory (default: the catalog shipped with nvbuild).")
    var catalog: String?

    @Option(help: "Result cache directory (default: NVBUILD_CACHE_DIR, else $XDG_CACHE_HOME/nvbuild).")
    var cacheDir: String?

    @Flag(help: "Do not read or write the result cache.")
    var noCache = false
}

/// How a probe is set up, from `probe`'s options or `build`'s defaults: the one place
/// ProbeOptions are made, so both honour the catalog, cache and module choices alike.
struct ProbeSettings {
    var jobs = ProcessInfo.processInfo.activeProcessorCount
    var compiler: String?
    /// NV_KERNEL_MODULES / NV_EXCLUDE_KERNEL_MODULES when nil.
    var modules: String?
    var exclude: String?
    var catalog: String?
    var cacheDir: String?
    var noCache = false
    var strict = false
    var grouping = true
    var environment = ProcessInfo.processInfo.environment
    /// distcc / ccache for the compile probes (`build --distcc`, `--ccache`).
    var launch = CompilerLaunch()
    /// A job budget shared with make and other kernels (`build`).
    var slots: JobSlots?

    static func list(_ text: String?) -> [String]? {
        text.map { $0.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init) }
    }

    func loadCatalog() throws -> Catalog {
        guard let dir = catalog ?? Catalog.defaultDirectory() else {
            throw UserError(.environment, "the conftest catalog was not found; pass --catalog DIR or set NVBUILD_CATALOG")
        }
        do {
            return try Catalog.load(directory: dir)
        } catch let error as CatalogError {
            throw UserError(.environment, "catalog error: \(error)")
        }
    }

    func options(tree path: String, kernel: KernelTarget, only: Set<String>? = nil) throws -> ProbeOptions {
        let env = environment
        let tree = try ConftestRequests.read(path: URL(fileURLWithPath: path).standardizedFileURL.path,
                                             modules: Self.list(modules) ?? Self.list(env["NV_KERNEL_MODULES"]),
                                             excluded: Self.list(exclude) ?? Self.list(env["NV_EXCLUDE_KERNEL_MODULES"]) ?? [])
        let cache = noCache ? nil : try ResultCache(directory: cacheDir ?? ResultCache.defaultDirectory(environment: env))
        var options = ProbeOptions(tree: tree, kernel: kernel, catalog: try loadCatalog(), jobs: jobs, environment: env,
                                   compilerOverride: compiler, strict: strict, onlyTests: only, cache: cache)
        options.grouping = grouping
        options.launch = launch
        options.slots = slots
        return options
    }
}

struct RunProbe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Probe a kernel and write conftest/ (the default subcommand).",
        discussion: "Example: nvbuild probe --tree kernel-open --kernel 6.1.0-56-amd64 --output /tmp/conftest"
    )

    @OptionGroup var probe: ProbeOptionsGroup
    @OptionGroup var kernel: KernelOptions

    @Option(help: "Where to write conftest/ (default: <tree>/conftest).")
    var output: String?

    @Flag(help: "Print the report as JSON.") var json = false
    @Flag(name: .shortAndLong, help: "Print nothing but errors.") var quiet = false
    @Flag(name: .shortAndLong, help: "Print every test's result and reasoning.") var verbose = false

    func run() async throws {
        let (target, note) = try kernel.resolve()
        let options = try probe.options(kernel: target)
        if let note, !quiet, !json { Terminal.note(note) }
        let bar = ProgressBar(enabled: !quiet && !json)
        let report = try await Prober.run(options) { phase, done, total in bar.update(phase.rawValue, done, total) }
        bar.finish()
        let destination = output ?? options.tree.path + "/conftest"
        try ConftestOutput.write(report, to: destination)
        if json {
            try Terminal.json(report)
            return
        }
        if verbose {
            Terminal.out("cache: \(report.cachedCompiles) compile probes from cache, \(report.cacheRejected) rejected entr\(report.cacheRejected == 1 ? "y" : "ies") (corrupt or sealed for another key; recomputed)")
            Terminal.out("compiler runs: \(report.compilerRuns) (\(report.unionCompiles) probes shown by union units, \(report.compiles - report.unionCompiles) compiled alone); phases: " + report.phaseSeconds.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.3f", $0.value)) s" }.joined(separator: ", "))
            for t in report.tests {
                Terminal.out("\(t.name): \(t.lines.map(\.text).joined(separator: "; "))")
                Terminal.out("    \(t.reasoning)")
            }
        }
        if !quiet { ProbeSummary.print(report, destination: destination, verbose: verbose) }
    }
}

enum ProbeSummary {
    /// Catalog-hygiene findings (a probe that failed on a missing header rather than on
    /// the feature) are for catalog authors: counted always, spelled out with --verbose,
    /// so a DKMS make.log does not carry warnings its reader cannot act on.
    static func print(_ report: ProbeReport, destination: String, verbose: Bool) {
        var defined = 0, undefined = 0
        for t in report.tests {
            for line in t.lines {
                switch line {
                case .define: defined += 1
                case .undef: undefined += 1
                case .other: break
                }
            }
        }
        let delegated = report.delegated
        let unknown = report.unknown, changed = report.changedUpstream
        let seconds = String(format: "%.2f", report.seconds)
        // Rejected entries are named only when there are some: they mean a damaged or cross-copied cache.
        let rejected = report.cacheRejected > 0 ? ", \(report.cacheRejected) rejected cache entr\(report.cacheRejected == 1 ? "y" : "ies") recomputed" : ""
        let split = delegated.isEmpty ? "" : " (\(unknown.count) unknown, \(changed.count) changed upstream)"
        Terminal.out("probe \(report.kernel.release): \(report.tests.count) tests, \(report.headerPresence.count) headers: \(defined) defined, \(undefined) undefined, \(delegated.count) delegated\(split); \(report.compiles) compiled, \(report.cachedCompiles) from cache\(rejected); \(seconds) s → \(destination)")
        if case .names = report.catalogMatching {
            Terminal.note(report.catalogMatching.description)
        }
        if !changed.isEmpty {
            Terminal.warning("changed upstream, delegated to the tree's conftest.sh (their arms match no catalog definition's Upstream: fingerprints): \(changed.joined(separator: ", "))")
        }
        if !unknown.isEmpty {
            Terminal.warning("delegated to the tree's conftest.sh (not in the catalog): \(unknown.joined(separator: ", "))")
        }
        let suspicious = report.tests.compactMap(\.suspicious)
        if verbose {
            suspicious.forEach(Terminal.report)
        } else if !suspicious.isEmpty {
            Terminal.note("\(suspicious.count) catalog definition\(suspicious.count == 1 ? "" : "s") decided by a missing header rather than the feature (catalog hygiene; --verbose names them)")
        }
        for s in report.sanity { if let w = s.warning { Terminal.report(w) } }
    }
}

/// A one-line progress bar on an interactive stderr; silent otherwise.
final class ProgressBar: Sendable {
    private let enabled: Bool
    /// When the bar was last drawn (progress arrives from concurrent compiles).
    private let last = Mutex(Date.distantPast)

    init(enabled: Bool) { self.enabled = enabled && Terminal.errorIsInteractive }

    func update(_ phase: String, _ done: Int, _ total: Int) {
        guard enabled else { return }
        last.withLock { last in
            guard done == total || Date().timeIntervalSince(last) > 0.05 else { return }
            last = Date()
            let width = 30
            let filled = total == 0 ? width : width * done / max(total, 1)
            Terminal.status("[\(String(repeating: "#", count: filled))\(String(repeating: ".", count: width - filled))] \(done)/\(total) \(phase)")
        }
    }

    func finish() {
        guard enabled else { return }
        Terminal.clearStatus()
    }
}
