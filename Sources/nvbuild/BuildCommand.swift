import ArgumentParser
import Conftest
import DKMS
import Foundation
import Kbuild
import KernelTree
import NVBuildSupport
import SourceTree

struct BuildCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build modules through the kernel's own Kbuild, for one kernel or many.",
        discussion: """
            nvbuild runs `make -C <kernel> M=<tree> modules` as the tree's own Makefile would: \
            kernel source and output trees, CC from the kernel's CONFIG_CC_VERSION_TEXT, ARCH, \
            and for NVIDIA-style trees NV_KERNEL_SOURCES/NV_KERNEL_OUTPUT/NV_KERNEL_MODULES, \
            after running the conftest probe. Each kernel builds in its own copy of the tree, so \
            builds never share objects and the tree stays clean: files are copied (reflinked where \
            the filesystem can), never hard-linked, so a build step that writes a source in place \
            changes only the copy. The copy leaves out build \
            products (objects, .ko, .mod, .cmd, Module.symvers, modules.order, conftest/, .git). \
            A symlink that resolves inside the tree, or a relative one to a file outside it (as \
            `make M=$PWD` in the tree would read it), is copied as the file it points to; a \
            dangling one, an absolute one or one to a folder outside the tree stops the build \
            before it starts (exit 1). A binary core the Kbuild links (NVIDIA's \
            nvidia/nv-kernel.o_binary, a link into the full tree's src/…/_out) is copied from its \
            target. `dkms package` refuses every other link leaving the tree.

            --tree may be NVIDIA's whole source package (the root of open-gpu-kernel-modules, \
            recognised by its top-level Makefile): its OS-agnostic cores (src/nvidia's \
            nv-kernel.o, src/nvidia-modeset's nv-modeset-kernel.o) are built once with their own \
            makefiles — they read no kernel header — into the cache (<cache>/cores, keyed by \
            their sources, make variables and compiler; --no-cache rebuilds them), and kernel-open/ \
            is built for each kernel with them. A Kbuild tree whose Kbuild links a core it does \
            not hold (kernel-open/ without nv-kernel.o_binary) is refused before anything \
            compiles (exit 2), naming the missing files.

            Where things go (BUILD_DIR is --build-dir, default <tree>/.nvbuild/build):
              BUILD_DIR/cores.log             the cores' make output (full trees, when built)
              BUILD_DIR/<release>/build.log   full make output for that kernel
              BUILD_DIR/<release>/tree/       the copy make builds in; the .ko files land here
              BUILD_DIR/<release>/INCOMPLETE  present while make runs and after an interrupted build
            (<release> gets a suffix @<hash of the tree path> for trees given with --kernel-output.)

            make runs with -k, so past a failing object every other one still compiles: the \
            table names each module whose objects failed with its first error (file:line), and \
            for trees that select modules (NV_KERNEL_MODULES) a second make links the modules \
            whose objects all compiled, which are then listed as built. (A plain obj-m tree \
            links nothing once one object failed; its other modules are listed as not linked.)

            make runs in a process group of its own. SIGINT or SIGTERM to nvbuild stops that \
            group and every compiler the probe started (SIGKILL after 5 s), removes the .ko \
            files of the folder being built, leaves BUILD_DIR/<release>/INCOMPLETE (the next \
            build starts from a fresh copy) and exits 130 / 143.

            --kernel all builds for every kernel under /lib/modules with a build tree; with several \
            kernels (`all`, or --kernel repeated) their probes and makes run at the same time under \
            one budget of --jobs compilers: nvbuild is a GNU make jobserver (a FIFO of --jobs \
            tokens) that every make takes its jobs from and every probe compile holds one of, so \
            all of them together never run more than --jobs compilers. A failure fails only its \
            own row. On a terminal a status line counts kernels done, running and failed.

            --distcc HOSTS (DISTCC_HOSTS syntax, or DISTCC_HOSTS from the environment) runs Kbuild \
            as CC="distcc <compiler>" with DISTCC_HOSTS set, raises the budget to what `distcc -j` \
            reports for those hosts, and sends the probe's compile probes through distcc too; \
            steps distcc cannot distribute (preprocessing, header presence, the sanity checks, \
            delegated conftest.sh tests) run here (--verbose says so). distcc falls back to this \
            machine when a host fails; the table then notes how many compiles fell back. --ccache \
            puts ccache in front (with distcc: ccache runs distcc on a miss, CCACHE_PREFIX). The \
            compiler may also be a wrapper such as `ccache gcc` (--cc, or CC in the environment, \
            as with the Makefile). docs/build-farm.md: workers, what must match.

            --sign-key KEY --sign-cert CERT signs every built module with each kernel's own \
            scripts/sign-file and CONFIG_MODULE_SIG_HASH, after modpost (make modules leaves \
            modules uncompressed, so the signature is the one the kernel checks); --sign takes \
            DKMS's mok_signing_key / mok_certificate from /etc/dkms/framework.conf (default \
            /var/lib/dkms/mok.key, mok.pub). A missing sign-file, key or certificate, or a key \
            that is not the certificate's, stops before anything is built (exit 2). The table \
            gets a SIGNER column; --json carries signer, signatureHash and signingCertificate \
            per module. The kernel trusts the signature only once the certificate is enrolled \
            (mokutil --import CERT); see `nvbuild modules verify --secure-boot`.

            Example:
              nvbuild build --tree kernel-open --kernel 6.12.117+deb12-amd64 --jobs 8
              nvbuild build --tree kernel-open --kernel all --sign
              nvbuild build --tree . --kernel all --cc "ccache x86_64-linux-gnu-gcc-12"
              nvbuild build --tree . --kernel all --kernel-output /tmp/linux-headers-copy
              nvbuild build --tree kernel-open --kernel all --distcc "worker1/8 worker2/8" --ccache
              nvbuild build --tree open-gpu-kernel-modules --kernel all
            Exit status: 0 all kernels built; 1 a build failed; 2 usage or environment error.
            """
    )

    @Option(help: "The driver tree (its top Kbuild/Makefile).") var tree: String = "."
    @Option(
        name: .customLong("kernel"),
        help: "Kernel release under /lib/modules, or `all` for every installed one; repeatable (default: the running kernel, else the newest installed).")
    var releases: [String] = []
    @Option(name: .customLong("kernel-source"), help: "Kernel source tree, like the driver Makefile's SYSSRC.")
    var sourceDirectory: String?
    @Option(name: .customLong("kernel-output"), help: "Configured kernel output tree, like SYSOUT; repeatable, each one builds as its own target.")
    var outputDirectories: [String] = []
    @Option(help: "Compilers running at once over all kernels, make's and the probe's together (default: CPU count).") var jobs: Int?
    @Option(help: "Comma-separated subset of modules to build (trees that select modules, like NVIDIA's).") var modules: String?
    @Option(help: "Compiler command for Kbuild, e.g. `ccache gcc` (default: $CC, else the kernel's own compiler).") var cc: String?
    @Option(help: "Folder for per-kernel build copies and logs (default: <tree>/.nvbuild/build).") var buildDir: String?
    @Option(name: .customLong("distcc"), help: "distcc hosts (DISTCC_HOSTS syntax) for Kbuild and the probe's compiles (default: $DISTCC_HOSTS when set).")
    var distccHosts: String?
    @Flag(help: "Put ccache in front of the compiler.") var ccache = false
    @Flag(help: "Pass V=1 to Kbuild; say which steps distcc leaves on this machine.") var verbose = false
    @Flag(help: "Print JSON instead of a table.") var json = false
    @Option(name: .customLong("sign-key"), help: ArgumentHelp("Private key to sign the built modules with (a file or a pkcs11: URI).", valueName: "key"))
    var signKey: String?
    @Option(name: .customLong("sign-cert"), help: ArgumentHelp("The X.509 certificate of --sign-key.", valueName: "cert"))
    var signCertificate: String?
    @Flag(help: "Sign with DKMS's MOK: mok_signing_key and mok_certificate of /etc/dkms/framework.conf (default /var/lib/dkms/mok.key, mok.pub).")
    var sign = false
    /// The probe before make uses the same catalog and cache options as `nvbuild probe`.
    @OptionGroup var catalogAndCache: CatalogCacheOptions

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        // distcc and ccache first: a missing one is named before anything else is looked at.
        let launch = try Self.launch(distcc: distccHosts, ccache: ccache, environment: environment)
        // NVIDIA's whole source package: its OS-agnostic cores are built once (below) and
        // its Kbuild tree (kernel-open/) is what each kernel builds.
        let fullTree = try FullTree.detect(path: tree)
        let driverTree = try fullTree?.kbuildTree ?? DriverTree.load(path: tree)
        let selected = modules.map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }
        if let selected {
            let unknown = selected.filter { !driverTree.moduleNames.contains($0) }
            guard unknown.isEmpty else {
                throw UserError(.usage, "--modules names \(unknown.joined(separator: ", ")), which \(driverTree.path) does not build; its modules are \(driverTree.moduleNames.joined(separator: ", "))")
            }
            guard driverTree.style == .nvidia || Set(selected) == Set(driverTree.moduleNames) else {
                throw UserError(.usage, "--modules needs a tree whose Makefile selects modules (NV_KERNEL_MODULES); \(driverTree.path) builds every obj-m module together")
            }
        }
        // A Kbuild tree without the cores it links fails here, before anything compiles.
        if fullTree == nil { try driverTree.checkBinaryCores() }
        // The per-kernel copies refuse the same links; checking once here makes a tree
        // that cannot be copied a failure (exit 1) before any kernel is tried.
        // A full tree's cores come from CoreBuilder, so whatever kernel-open holds in their place is not read.
        _ = try TreeMirror(scanning: driverTree.path, outsideLinks: .copyFiles, binaryCores: Set(driverTree.binaryCores),
                           excludingPaths: Set((fullTree?.cores ?? []).map(\.binaryPath)))
        let signing = try signingKey()
        let targets = try resolveTargets(tree: driverTree)
        // Every kernel's signer is checked before anything is built.
        var signers: [String: ModuleSigner] = [:]
        if let signing {
            for case .kernel(let kernel) in targets where signers[kernel.outputDirectory] == nil {
                signers[kernel.outputDirectory] = try await ModuleSigner.prepare(
                    for: kernel, key: signing.key, certificate: signing.certificate, scratchDirectory: NSTemporaryDirectory())
            }
        }
        let jobCount = max(1, jobs ?? ProcessInfo.processInfo.activeProcessorCount)
        let root = buildDir.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
            ?? "\(fullTree?.root ?? driverTree.path)/.nvbuild/build"
        let compiler = cc ?? environment["CC"].flatMap { $0.isEmpty ? nil : $0 }
        var cores: BuiltCores?
        if let fullTree, targets.contains(where: { if case .kernel = $0 { true } else { false } }) {
            cores = try await buildCores(fullTree, buildRoot: root, jobs: jobCount, compiler: compiler)
        }
        // One budget for everything: make's jobs (through the jobserver) and the probe's compiles.
        var budget = jobCount
        if let offered = try await launch.distccConcurrency(environment: environment) { budget = max(budget, offered) }
        let slots = try JobSlots.jobserver(budget, helper: [Self.executablePath, Main.jobserverExec])
        if verbose, !json, launch.distccHosts != nil || launch.ccache {
            Terminal.note(Self.launchNote(launch, jobs: jobCount, budget: budget))
        }
        var settings = ProbeSettings(catalog: catalogAndCache.catalog, cacheDir: catalogAndCache.cacheDir, noCache: catalogAndCache.noCache)
        settings.jobs = budget
        settings.launch = launch
        settings.slots = slots
        let board = json ? nil : ProgressBoard()
        let builder = KbuildBuilder(
            prepare: BuildHooks.prepare(for: driverTree, settings: settings),
            explain: BuildHooks.explain(for: driverTree),
            progress: Self.progressHandler(board))

        var results = [KernelBuildResult?](repeating: nil, count: targets.count)
        var requests: [(index: Int, request: BuildRequest)] = []
        var usedLabels: Set<String> = []
        for (index, target) in targets.enumerated() {
            switch target {
            case .failed(let label, let output, let reason):
                results[index] = .failed(label: label, release: label, output: output, reason: reason)
            case .skipped(let kernel, let reason):
                results[index] = .skipped(label: Self.label(for: kernel), release: kernel.release, output: kernel.outputDirectory, reason: reason)
            case .kernel(let kernel):
                var label = Self.label(for: kernel)
                var n = 2
                while usedLabels.contains(label) {
                    label = "\(kernel.release)~\(n)"
                    n += 1
                }
                usedLabels.insert(label)
                if !json, !kernel.compilerInstalled, compiler == nil, let c = kernel.compiler {
                    Terminal.report(.warning("\(kernel.release) was built with \(c), which is not installed; Kbuild falls back to its default compiler"))
                }
                requests.append((index, BuildRequest(
                    tree: driverTree, kernel: kernel, label: label, buildRoot: root, jobs: budget,
                    modules: selected, compiler: compiler, verbose: verbose, launch: launch, slots: slots,
                    providedFiles: cores?.objects ?? [:], signer: signers[kernel.outputDirectory])))
            }
        }
        board?.start(requests.map(\.request.label))
        // Every kernel at once: copies, probes and makes overlap; the slots keep the compilers to the budget.
        await withTaskGroup(of: (Int, KernelBuildResult).self) { group in
            for (index, request) in requests {
                group.addTask { (index, await builder.build(request)) }
            }
            for await (index, built) in group {
                var result = built
                result.cores = cores
                // Stopped by SIGINT/SIGTERM: the handler reports and exits; this row is no result.
                if Interruption.received != nil { await Interruption.parkUntilExit() }
                if let board {
                    board.finish(result.label, succeeded: result.succeeded) {
                        Terminal.note("\(result.succeeded ? "built" : "FAILED") for \(result.label) in \(String(format: "%.1f", result.seconds)) s, log: \(result.logPath ?? "none")")
                    }
                }
                results[index] = result
            }
        }
        board?.close()
        let rows = results.compactMap { $0 }
        if json {
            try Terminal.json(rows)
        } else {
            printTable(rows)
        }
        if rows.contains(where: { !$0.succeeded && !$0.skipped }) { throw ExitCode(1) }
    }

    /// distcc and ccache as asked for (--distcc, else DISTCC_HOSTS; --ccache), each checked in PATH.
    static func launch(distcc: String?, ccache: Bool, environment: [String: String]) throws -> CompilerLaunch {
        let fromEnvironment = environment["DISTCC_HOSTS"].flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0 }
        if let distcc, distcc.trimmingCharacters(in: .whitespaces).isEmpty {
            throw UserError(.usage, "--distcc needs hosts, e.g. --distcc \"worker1/8 worker2/8\" (man distcc, HOST SPECIFICATIONS)")
        }
        let launch = CompilerLaunch(distccHosts: distcc ?? fromEnvironment, ccache: ccache)
        if let missing = launch.missingTool(environment: environment) {
            let cause = missing == "distcc" ? (distcc != nil ? "--distcc" : "DISTCC_HOSTS in the environment") : "--ccache"
            throw UserError(.environment, "\(missing): not found in PATH (asked for by \(cause)); install it (apt-get install \(missing))")
        }
        return launch
    }

    /// For --verbose: what runs through the launchers and what stays here.
    static func launchNote(_ launch: CompilerLaunch, jobs: Int, budget: Int) -> String {
        var parts: [String] = []
        if let hosts = launch.distccHosts {
            parts.append("distcc: Kbuild compiles and the probe's compile probes go to DISTCC_HOSTS='\(hosts)'; "
                + "budget \(budget) compilers (distcc -j, --jobs \(jobs)); preprocessing, header presence, the sanity checks "
                + "and delegated conftest.sh tests run on this machine (distcc cannot distribute preprocess-only steps)")
        }
        if launch.ccache { parts.append("ccache: in front of the compiler\(launch.distccHosts != nil ? ", running distcc on a miss (CCACHE_PREFIX=distcc)" : "")") }
        return parts.joined(separator: "; ")
    }

    static func progressHandler(_ board: ProgressBoard?) -> (@Sendable (BuildProgress) -> Void)? {
        guard let board else { return nil }
        return { progress in board.update(progress) }
    }

    /// This program, for the jobserver's make helper.
    static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// The full tree's OS-agnostic cores, once for every kernel: from the cache
    /// (`<cache>/cores`, keyed by their sources and compiler), else built by their own make.
    private func buildCores(_ fullTree: FullTree, buildRoot: String, jobs: Int, compiler: String?) async throws -> BuiltCores {
        let environment = ProcessInfo.processInfo.environment
        let cacheRoot = catalogAndCache.cacheDir ?? ResultCache.defaultDirectory(environment: environment)
        let builder = CoreBuilder(cacheDirectory: cacheRoot + "/cores", jobs: jobs,
                                  compiler: compiler.flatMap(CompilerCommand.init(parsing:)))
        if !json { Terminal.status("building the OS-agnostic cores (\(fullTree.cores.map(\.objectName).joined(separator: ", ")))") }
        let cores = try await builder.build(fullTree, logPath: buildRoot + "/cores.log", reuse: !catalogAndCache.noCache)
        if !json {
            Terminal.clearStatus()
            let what = fullTree.cores.map(\.objectName).joined(separator: ", ")
            Terminal.note(cores.reused ? "cores \(what): reused from the cache (key \(cores.key.prefix(12)))"
                                       : "cores \(what): built in \(String(format: "%.1f", cores.seconds)) s, log: \(buildRoot)/cores.log")
        }
        return cores
    }

    /// The key and certificate to sign with, or nil when not signing.
    private func signingKey() throws -> (key: String, certificate: String)? {
        if sign {
            guard signKey == nil, signCertificate == nil else {
                throw UserError(.usage, "--sign takes DKMS's key and certificate; give either --sign or --sign-key with --sign-cert")
            }
            let settings = try DKMSFramework.signingSettings()
            return (settings.key, settings.certificate)
        }
        switch (signKey, signCertificate) {
        case (nil, nil): return nil
        case (let key?, let certificate?): return (key, certificate)
        case (nil, _): throw UserError(.usage, "--sign-cert needs --sign-key (the private key of that certificate)")
        case (_, nil): throw UserError(.usage, "--sign-key needs --sign-cert (the X.509 certificate of that key)")
        }
    }

    /// The build folder name: the release for an installed kernel, plus a tag of the
    /// tree's path for any other tree, so two trees of one release never share objects.
    static func label(for kernel: KernelTarget) -> String {
        if kernel.outputDirectory == "/lib/modules/\(kernel.release)/build" { return kernel.release }
        var hash: UInt32 = 2_166_136_261
        for byte in kernel.outputDirectory.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        return "\(kernel.release)@\(String(hash, radix: 16))"
    }

    enum Target {
        case kernel(KernelTarget)
        case failed(label: String, output: String, reason: Diagnostic)
        /// `--kernel all` found a kernel the tree refuses by its configuration.
        case skipped(KernelTarget, reason: Diagnostic)
    }

    /// Why the tree refuses `kernel` by configuration: its sanity check's own rule
    /// (PREEMPT_RT unless IGNORE_PREEMPT_RT_PRESENCE), for trees that run that check.
    static func refusal(of kernel: KernelTarget, by tree: DriverTree, environment: [String: String]) -> Diagnostic? {
        guard tree.rejectsPreemptRT,
              let reason = SanityChecker.preemptRTRefusal(config: kernel.config, environment: environment) else { return nil }
        return .note("skipped: \(reason)", file: kernel.configPath)
    }

    /// Every kernel asked for; a tree that cannot even be described becomes a failed row.
    /// Each named kernel is resolved as every other command resolves its one kernel
    /// (KernelOptions); only `all` and the repeated options are this command's own.
    private func resolveTargets(tree: DriverTree) throws -> [Target] {
        let discovery = KernelDiscovery()
        var targets: [Target] = []
        func describe(_ label: String, _ output: String, release: String? = nil, source: String? = nil, outputDirectory: String? = nil) {
            do {
                let options = Self.kernelOptions(release: release, source: source, output: outputDirectory)
                targets.append(.kernel(try options.resolve(discovery: discovery).0))
            } catch let error as UserError {
                targets.append(.failed(label: label, output: output, reason: .error(error.message)))
            } catch {
                targets.append(.failed(label: label, output: output, reason: .error(UserError.describe(error))))
            }
        }
        for release in releases {
            if release == "all" {
                let installed = discovery.installedKernels()
                guard !installed.isEmpty else {
                    throw UserError(.environment, "--kernel all: no kernel headers found under /lib/modules/*/build; install some, e.g. apt-get install linux-headers-amd64")
                }
                // A kernel the tree refuses is a skipped row under `all`; named explicitly,
                // it is built and fails its sanity check as before.
                let environment = ProcessInfo.processInfo.environment
                targets += installed.map { kernel in
                    Self.refusal(of: kernel, by: tree, environment: environment).map { .skipped(kernel, reason: $0) } ?? .kernel(kernel)
                }
            } else {
                describe(release, "/lib/modules/\(release)/build", release: release)
            }
        }
        if let sourceDirectory {
            guard outputDirectories.count <= 1 else {
                throw UserError(.usage, "--kernel-source pairs with one --kernel-output; build several output trees without --kernel-source")
            }
            let output = outputDirectories.first
            describe(output ?? sourceDirectory, output ?? sourceDirectory, source: sourceDirectory, outputDirectory: output)
        } else {
            for output in outputDirectories {
                describe(output, output, outputDirectory: output)
            }
        }
        if targets.isEmpty {
            let (kernel, note) = try Self.kernelOptions().resolve(discovery: discovery)
            if !json, let note { Terminal.note(note) }
            targets.append(.kernel(kernel))
        }
        return targets
    }

    /// One kernel's options as if given on the command line (every field set: an
    /// unparsed option has no value to read).
    static func kernelOptions(release: String? = nil, source: String? = nil, output: String? = nil) -> KernelOptions {
        var options = KernelOptions()
        options.release = release
        options.sourceDirectory = source
        options.outputDirectory = output
        return options
    }

    /// A path inside the driver tree, relative to it; others as they are.
    static func shortPath(_ path: String, tree: String) -> String {
        let root = URL(fileURLWithPath: tree).standardizedFileURL.path
        return path.hasPrefix(root + "/") ? String(path.dropFirst(root.count + 1)) : path
    }

    private func printTable(_ results: [KernelBuildResult]) {
        let signed = results.contains { $0.modules.contains { $0.signer != nil } }
        var rows: [[String]] = [["KERNEL", "MODULE", "RESULT", "SIZE"] + (signed ? ["SIGNER"] : []) + ["VERMAGIC"]]
        for r in results {
            let kernel = r.label == r.release ? r.release : "\(r.release) (\(r.kernelOutputDirectory))"
            if r.modules.isEmpty {
                rows.append([kernel, "-", r.skipped ? "skipped" : "failed", "-"] + (signed ? ["-"] : []) + [r.reason?.message ?? ""])
                continue
            }
            for m in r.modules {
                // A module that failed says where: its own first error, or why it was not linked.
                var detail = m.vermagic ?? "-"
                if !m.built {
                    if let f = m.failure, let file = f.file {
                        detail = "error at \(Self.shortPath(file, tree: tree))\(f.line.map { ":\($0)" } ?? "")"
                    } else if m.reason != nil {
                        detail = "not built, see below"
                    }
                }
                let signer = m.signer.map { "\($0) (\(m.signatureHash ?? "?"))" } ?? "-"
                rows.append([kernel, m.name, m.built ? "ok" : "failed", m.size.map(String.init) ?? "-"] + (signed ? [signer] : []) + [detail])
            }
        }
        let columns = rows[0].count, last = columns - 1
        let widths = (0..<columns).map { c in rows.map { $0[c].count }.max() ?? 0 }
        for (i, row) in rows.enumerated() {
            var line = ""
            for c in 0..<columns {
                var cell = row[c].padding(toLength: c == last ? row[c].count : widths[c], withPad: " ", startingAt: 0)
                if i == 0 { cell = Terminal.styled(cell, .bold) }
                if c == 2, i > 0 { cell = Terminal.styled(cell, row[c] == "ok" ? .green : row[c] == "skipped" ? .yellow : .red) }
                line += cell + (c < last ? "  " : "")
            }
            Terminal.out(line)
        }
        for r in results {
            for var note in r.notes {
                note.message = "\(r.label): \(note.message)"
                Terminal.report(note)
            }
        }
        for r in results where !r.succeeded {
            Terminal.out("")
            if var reason = r.reason {
                reason.message = "\(r.label): \(reason.message)"
                Terminal.report(reason)
            } else {
                Terminal.out(Terminal.styled("\(r.label): failed", .bold))
            }
            for m in r.modules where !m.built {
                if let reason = m.reason { Terminal.out("  \(reason.message)") }
            }
            if let f = r.failure {
                if let file = f.file { Terminal.out("  failing file: \(file)\(f.line.map { ":\($0)" } ?? "")") }
                if let from = f.includedFrom { Terminal.out("  included from: \(from)") }
                for line in f.errorLines { Terminal.out("  | \(line)") }
                if let e = f.explanation { Terminal.out("  conftest: \(e)") }
            }
            if let log = r.logPath { Terminal.out("  full log: \(log)") }
        }
    }
}
