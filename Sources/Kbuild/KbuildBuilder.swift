import Foundation
import KernelTree
import NVBuildSupport
import SourceTree

/// What to build, for which kernel, and where.
public struct BuildRequest: Sendable {
    public var tree: DriverTree
    public var kernel: KernelTarget
    /// A name for this kernel's build folder and table row; the release unless two targets share one.
    public var label: String
    /// Folder that gets `<label>/tree` (the copy make builds in) and `<label>/build.log`.
    public var buildRoot: String
    public var jobs: Int
    public var modules: [String]?
    public var compiler: String?
    public var verbose: Bool
    /// distcc / ccache in front of the compiler.
    public var launch: CompilerLaunch
    /// The job budget this build shares (with the probe and other kernels' builds); when
    /// they are a jobserver's, make takes its jobs from it instead of running -j`jobs`.
    public var slots: JobSlots?
    /// Files the build copy takes from elsewhere, by tree-relative path: the binary cores
    /// `CoreBuilder` built from a full tree.
    public var providedFiles: [String: String]
    /// Signs every module built for this kernel after modpost (make modules does not
    /// compress), with this kernel's own sign-file and hash.
    public var signer: ModuleSigner?

    public init(
        tree: DriverTree, kernel: KernelTarget, label: String? = nil, buildRoot: String, jobs: Int,
        modules: [String]? = nil, compiler: String? = nil, verbose: Bool = false,
        launch: CompilerLaunch = CompilerLaunch(), slots: JobSlots? = nil, providedFiles: [String: String] = [:],
        signer: ModuleSigner? = nil
    ) {
        self.providedFiles = providedFiles
        self.signer = signer
        self.tree = tree
        self.kernel = kernel
        self.label = label ?? kernel.release
        self.buildRoot = buildRoot
        self.jobs = jobs
        self.modules = modules
        self.compiler = compiler
        self.verbose = verbose
        self.launch = launch
        self.slots = slots
    }

    /// `CC` for Kbuild: the named compiler (else the kernel's own, else Kbuild's default)
    /// with the launchers asked for; nil leaves CC to KbuildInvocation's default.
    public var compilerCommand: CompilerCommand? {
        let named = compiler.flatMap(CompilerCommand.init(parsing:))
        guard launch.distccHosts != nil || launch.ccache else { return named }
        let base = named ?? kernel.installedCompiler ?? CompilerCommand(compiler: tree.style == .nvidia ? "cc" : "gcc")
        return base.launched(launch)
    }

    /// make's -j: none when make is a client of the shared jobserver.
    var makeJobs: Int? { slots?.jobserver == nil ? jobs : nil }

    public var directory: String { "\(buildRoot)/\(label)" }
    public var buildTree: String { "\(directory)/tree" }
    public var logPath: String { "\(directory)/build.log" }
    /// Present while make may be running for this folder, and left behind when a build
    /// was interrupted: the next build then starts from a fresh copy instead of trusting
    /// objects that a killed compiler may have left half-written.
    public var incompleteMarker: String { "\(directory)/INCOMPLETE" }
    public var selectedModules: [ModuleSpec] {
        guard let modules else { return tree.modules }
        return tree.modules.filter { modules.contains($0.name) }
    }
}

public struct ModuleResult: Sendable, Codable, Equatable {
    public var name: String
    public var path: String
    public var built: Bool
    public var size: Int?
    public var vermagic: String?
    /// Why this module was not built: its own first compiler error (file:line), or
    /// that it could not be linked although its objects compiled.
    public var reason: Diagnostic?
    /// The first compiler error in one of this module's own objects.
    public var failure: BuildFailure?
    /// For a build with signing: the subject of the certificate whose key signed the module
    /// (checked against it after signing), the hash, and the certificate file.
    public var signer: String?
    public var signatureHash: String?
    public var signingCertificate: String?
}

public struct KernelBuildResult: Sendable, Codable {
    public var label: String
    public var release: String
    public var kernelOutputDirectory: String
    public var succeeded: Bool
    /// Not built because the tree refuses this kernel by configuration (e.g. PREEMPT_RT);
    /// `reason` says why. A skipped row does not fail a multi-kernel build.
    public var skipped = false
    /// Why the build failed or was skipped: one message, with the failing file:line when the compiler named one.
    public var reason: Diagnostic?
    public var failure: BuildFailure?
    public var logPath: String?
    public var command: String?
    public var modules: [ModuleResult]
    public var seconds: Double
    /// What else the build says about itself (distcc compiles that fell back to this machine).
    public var notes: [Diagnostic] = []
    /// The OS-agnostic cores linked into this build, for a full tree (built once, shared by every kernel).
    public var cores: BuiltCores?

    public static func failed(label: String, release: String, output: String, reason: Diagnostic, logPath: String? = nil) -> KernelBuildResult {
        KernelBuildResult(
            label: label, release: release, kernelOutputDirectory: output, succeeded: false, reason: reason,
            failure: nil, logPath: logPath, command: nil, modules: [], seconds: 0)
    }

    public static func skipped(label: String, release: String, output: String, reason: Diagnostic) -> KernelBuildResult {
        var result = failed(label: label, release: release, output: output, reason: reason)
        result.skipped = true
        return result
    }
}

/// Progress of one kernel's build, as read from make's output.
public struct BuildProgress: Sendable {
    public enum Phase: Sendable { case preparing, compiling, linking, finished }
    public var label: String
    public var phase: Phase
    public var compiledObjects: Int
    public var lastItem: String?
}

/// Builds a tree for one kernel through the kernel's own Kbuild.
public struct KbuildBuilder: Sendable {
    /// Runs before make for trees that request conftest results (NVIDIA-style):
    /// the CLI wires this to `nvbuild probe`, which writes `conftest/` into the
    /// build tree. Without it the tree's own Kbuild runs its conftest inside make.
    public typealias Prepare = @Sendable (_ kernel: KernelTarget, _ buildTree: String) async throws -> Void
    /// Given the failing build and the identifiers the compiler quoted, says which
    /// conftest result led there (the CLI wires this to `probe explain`).
    public typealias Explain = @Sendable (_ kernel: KernelTarget, _ buildTree: String, _ failure: BuildFailure) async -> String?

    public var prepare: Prepare?
    public var explain: Explain?
    public var progress: (@Sendable (BuildProgress) -> Void)?

    public init(prepare: Prepare? = nil, explain: Explain? = nil, progress: (@Sendable (BuildProgress) -> Void)? = nil) {
        self.prepare = prepare
        self.explain = explain
        self.progress = progress
    }

    public func build(_ request: BuildRequest) async -> KernelBuildResult {
        let started = Date()
        let kernel = request.kernel
        func fail(_ reason: Diagnostic, log: String? = nil) -> KernelBuildResult {
            var r = KernelBuildResult.failed(label: request.label, release: kernel.release, output: kernel.outputDirectory, reason: reason, logPath: log)
            r.seconds = Date().timeIntervalSince(started)
            return r
        }
        if let missing = Self.missingKernelFile(kernel) {
            return fail(.error(
                "kernel tree \(kernel.outputDirectory) is incomplete: \(missing) is missing",
                remedy: "reinstall its headers (apt-get install --reinstall linux-headers-\(kernel.release)) or point --kernel-output at a complete tree"))
        }
        progress?(BuildProgress(label: request.label, phase: .preparing, compiledObjects: 0, lastItem: nil))
        do {
            // Scanned before anything is written: a refused symlink leaves no build folder behind.
            let mirror = try TreeMirror(scanning: request.tree.path, outsideLinks: .copyFiles, binaryCores: Set(request.tree.binaryCores),
                                        providedFiles: request.providedFiles)
            try FileManager.default.createDirectory(atPath: request.directory, withIntermediateDirectories: true)
            if FileManager.default.fileExists(atPath: request.incompleteMarker) {
                try? FileManager.default.removeItem(atPath: request.buildTree)
            }
            try Data("an nvbuild build of this folder is running or was interrupted; the next build starts from a fresh copy\n".utf8)
                .write(to: URL(fileURLWithPath: request.incompleteMarker))
            try mirror.write(to: request.buildTree, method: .sync)
            for module in request.selectedModules {
                unlink("\(request.buildTree)/\(module.relativeObjectPath)")
            }
        } catch let error as UserError {
            return fail(.error(error.message))
        } catch {
            return fail(.error("cannot prepare the build folder \(request.buildTree): \(FileSystemError.cause(error))"))
        }
        if request.tree.requestsConftest, let prepare {
            do {
                try await prepare(kernel, request.buildTree)
            } catch {
                // make has not run: the copy is as good as the mirror made it.
                if Interruption.received == nil { unlink(request.incompleteMarker) }
                return fail(.error("probe failed: \(UserError.describe(error))"))
            }
        }
        let invocation = KbuildInvocation.modules(
            tree: request.tree, buildDirectory: request.buildTree, kernel: kernel,
            modules: request.tree.style == .nvidia ? request.modules : nil,
            jobs: request.makeJobs, compiler: request.compilerCommand, verbose: request.verbose)
        // Interrupted, the folder keeps its marker and loses every .ko, so nothing in it looks finished.
        let buildTree = request.buildTree, directory = request.directory
        let cleanup = Interruption.onStop {
            let removed = Self.removeModules(under: buildTree)
            return "\(directory): interrupted; marked INCOMPLETE\(removed > 0 ? ", \(removed) .ko file\(removed == 1 ? "" : "s") removed" : ""), the next build starts it afresh"
        }
        // Kept once a signal has arrived: the handler runs it after every process is gone.
        defer { if Interruption.received == nil { Interruption.removeOnStop(cleanup) } }
        let status: Int32
        do {
            status = try await runLogged(invocation, logPath: request.logPath, label: request.label, slots: request.slots)
        } catch let error as ProcessRunnerError {
            if case .interrupted = error { return fail(.error("\(error)"), log: request.logPath) }
            unlink(request.incompleteMarker)
            return fail(.error("could not run make: \(UserError.describe(error))"), log: request.logPath)
        } catch {
            unlink(request.incompleteMarker)
            return fail(.error("could not run make: \(UserError.describe(error))"), log: request.logPath)
        }
        // make ran to its end (successfully or not): the folder is as make left it.
        unlink(request.incompleteMarker)
        let log = status == 0 ? "" : (try? String(contentsOfFile: request.logPath, encoding: .utf8)) ?? ""
        var attribution = status == 0 ? nil : Self.attribute(log: log, request: request)
        // make -k compiled every object it could, but Kbuild links no module once one
        // object failed. A tree that selects modules gets a second make for the modules
        // whose objects all compiled: they link from the objects already there.
        if var known = attribution, request.tree.style == .nvidia, !known.failed.isEmpty {
            let linkable = request.selectedModules.filter { !known.failed.contains($0.name) && known.objects[$0.name] != nil }
            if !linkable.isEmpty {
                let relink = KbuildInvocation.modules(
                    tree: request.tree, buildDirectory: request.buildTree, kernel: kernel, modules: linkable.map(\.name),
                    jobs: request.makeJobs, compiler: request.compilerCommand, verbose: request.verbose)
                do {
                    _ = try await runLogged(relink, logPath: request.logPath, label: request.label, slots: request.slots, appending: true)
                } catch {
                    if Interruption.received != nil { return fail(.error("\(error)"), log: request.logPath) }
                }
                let full = (try? String(contentsOfFile: request.logPath, encoding: .utf8)) ?? log
                known.relinkLog = String(full.dropFirst(log.count))
                attribution = known
            }
        }
        var modules: [ModuleResult] = []
        for spec in request.selectedModules {
            let path = "\(request.buildTree)/\(spec.relativeObjectPath)"
            let exists = FileManager.default.fileExists(atPath: path)
            let ownFailure = attribution?.failed.contains(spec.name) == true
            var module = ModuleResult(
                name: spec.name, path: path, built: exists && (status == 0 || (attribution != nil && !ownFailure)),
                size: exists ? BuiltModuleFacts.size(path: path) : nil,
                vermagic: exists ? BuiltModuleFacts.vermagic(path: path) : nil)
            if !module.built, let attribution {
                if attribution.objects[spec.name] == nil {
                    module.reason = .error("\(spec.name): make stopped before compiling it")
                } else if ownFailure {
                    let first = attribution.firstFailure[spec.name]
                    module.failure = first
                    let place = first.flatMap { f in f.file.map { "\($0)\(f.line.map { ":\($0)" } ?? "")" } }
                    module.reason = .error(place.map { "\(spec.name): an object failed to compile; first error at \($0)" }
                        ?? "\(spec.name): an object failed to compile", file: first?.file, line: first?.line)
                } else {
                    module.reason = .error(attribution.linkProblem(of: spec)
                        ?? "\(spec.name): its objects compiled, but it was not linked because make stopped at another module's error")
                }
            }
            if module.built, request.signer == nil {
                // make leaves a module it did not relink as the last build left it.
                do {
                    if try ModuleSigner.removeSignature(path) { module.size = BuiltModuleFacts.size(path: path) }
                } catch {
                    module.built = false
                    module.reason = .error("\(spec.name): \(error.message)", file: path)
                }
            }
            if module.built, let signer = request.signer {
                progress?(BuildProgress(label: request.label, phase: .linking, compiledObjects: 0, lastItem: "signing \(spec.name)"))
                do {
                    let checked = try await signer.sign(path)
                    module.signer = checked.certificateSubject ?? signer.certificate.subject
                    module.signatureHash = signer.hashAlgorithm
                    module.signingCertificate = signer.certificatePath
                    module.size = BuiltModuleFacts.size(path: path)
                } catch {
                    module.built = false
                    module.reason = .error("\(spec.name): built, but not signed: \(error.message)", file: path)
                }
            }
            modules.append(module)
        }
        progress?(BuildProgress(label: request.label, phase: .finished, compiledObjects: 0, lastItem: nil))
        var result = KernelBuildResult(
            label: request.label, release: kernel.release, kernelOutputDirectory: kernel.outputDirectory,
            succeeded: status == 0 && modules.allSatisfy(\.built), reason: nil, failure: nil,
            logPath: request.logPath, command: invocation.commandLine, modules: modules,
            seconds: Date().timeIntervalSince(started))
        if request.compilerCommand?.isDistributed == true, let note = Self.distccFallbacks(logPath: request.logPath) {
            result.notes.append(note)
        }
        if status != 0 {
            var failure = BuildLog.firstFailure(in: log, buildDirectory: request.buildTree, sourceDirectory: request.tree.path)
            if var f = failure, !f.identifiers.isEmpty, let explain {
                f.explanation = await explain(kernel, request.buildTree, f)
                failure = f
            }
            result.failure = failure
            var message = "make exited with status \(status)"
            if let file = failure?.file, failure?.includedFrom == nil, !file.hasPrefix(request.tree.path + "/") {
                message += "; the first error is in a file outside the driver tree (\(file)), so the kernel tree \(kernel.outputDirectory) looks broken or incomplete"
            }
            if let attribution, !attribution.failed.isEmpty {
                let failed = modules.filter { attribution.failed.contains($0.name) }.map(\.name)
                let built = modules.filter(\.built).map(\.name)
                message += "; failed to compile: \(failed.joined(separator: ", "))"
                if let place = failure.flatMap({ f in f.file.map { "\($0)\(f.line.map { ":\($0)" } ?? "")" } }) {
                    message += " (first error at \(place))"
                }
                if !built.isEmpty { message += "; built: \(built.joined(separator: ", "))" }
            }
            result.reason = .error(message, file: failure?.file, line: failure?.line)
        } else if !result.succeeded {
            let missing = modules.filter { !$0.built }.map(\.name)
            result.reason = .error("make succeeded but did not produce \(missing.map { "\($0).ko" }.joined(separator: ", "))")
        }
        return result
    }

    /// Which modules a failed make broke: their objects (from Kbuild's `<module>.mod`
    /// files) against the objects make reports as failed, and each one's first compiler error.
    struct Attribution {
        var objects: [String: Set<String>] = [:]
        var failed: Set<String> = []
        var firstFailure: [String: BuildFailure] = [:]
        /// The output of the second make that linked the modules whose objects compiled.
        var relinkLog = ""

        /// The line of the relinking make that names this module (modpost's undefined
        /// symbols, for one that needs a module that failed).
        func linkProblem(of spec: ModuleSpec) -> String? {
            let ko = "\(spec.name).ko"
            guard let line = relinkLog.split(separator: "\n").first(where: { $0.contains("ERROR") && $0.contains(ko) }) else { return nil }
            return "\(spec.name): its objects compiled, but linking failed: \(line.trimmingCharacters(in: .whitespaces))"
        }
    }

    /// Nil when Kbuild wrote no `.mod` file for any module (make stopped before compiling):
    /// then every module shares the build's one reason.
    static func attribute(log: String, request: BuildRequest) -> Attribution? {
        let tree = request.buildTree
        var attribution = Attribution()
        for spec in request.selectedModules {
            let modFile = "\(tree)/\(spec.location.isEmpty ? "" : spec.location + "/")\(spec.name).mod"
            if let objects = BuildLog.moduleObjects(modFile: modFile, buildDirectory: tree) { attribution.objects[spec.name] = objects }
        }
        guard !attribution.objects.isEmpty else { return nil }
        let failedTargets = BuildLog.failedTargets(in: log, buildDirectory: tree)
        let failures = BuildLog.compilerFailures(in: log, buildDirectory: tree, sourceDirectory: request.tree.path)
        for (name, objects) in attribution.objects {
            let first = failures.first { f in f.compiledFile.map { objects.contains(BuildLog.object(of: $0, buildDirectory: tree)) } ?? false }
            if !objects.isDisjoint(with: failedTargets) || first != nil {
                attribution.failed.insert(name)
                attribution.firstFailure[name] = first
            }
        }
        // A module Kbuild wrote no .mod for never got as far as its objects: not known to be fine.
        for spec in request.selectedModules where attribution.objects[spec.name] == nil { attribution.failed.insert(spec.name) }
        return attribution
    }

    /// Removes every built module (.ko, also compressed) under `directory`; returns how many.
    static func removeModules(under directory: String) -> Int {
        var removed = 0
        let enumerator = FileManager.default.enumerator(atPath: directory)
        while let path = enumerator?.nextObject() as? String {
            let name = (path as NSString).lastPathComponent
            guard [".ko", ".ko.xz", ".ko.zst", ".ko.gz"].contains(where: { name.hasSuffix($0) }) else { continue }
            if unlink("\(directory)/\(path)") == 0 { removed += 1 }
        }
        return removed
    }

    /// Files Kbuild cannot do without; checked first so a broken tree gets one clear sentence.
    static func missingKernelFile(_ kernel: KernelTarget) -> String? {
        let out = kernel.outputDirectory
        for file in ["Makefile", ".config", "include/generated/autoconf.h", "include/config/auto.conf", "scripts/mod/modpost"]
        where !FileManager.default.fileExists(atPath: "\(out)/\(file)") {
            return file
        }
        if !kernel.facts.modversions { return nil }
        if !FileManager.default.fileExists(atPath: "\(out)/Module.symvers") { return "Module.symvers" }
        return nil
    }

    /// distcc's own lines in a build log: each compile (a distcc process, by its pid) that
    /// reported an error reaching or hearing from a host, or said it runs locally, was
    /// compiled on this machine instead (distcc's fallback); how many, and the first cause.
    static func distccFallbacks(logPath: String) -> Diagnostic? {
        guard let text = try? String(contentsOfFile: logPath, encoding: .utf8) else { return nil }
        var compiles: Set<Substring> = []
        var cause: String?
        for line in text.split(separator: "\n") where line.hasPrefix("distcc[") {
            guard line.contains("ERROR") || line.contains("locally") else { continue }
            guard let close = line.firstIndex(of: "]") else { continue }
            compiles.insert(line[..<close])
            if cause == nil { cause = String(line[line.index(after: close)...]).trimmingCharacters(in: .whitespaces) }
        }
        guard !compiles.isEmpty else { return nil }
        return .note("distcc: \(compiles.count) compile\(compiles.count == 1 ? "" : "s") fell back to this machine (\(cause ?? "")); the build log has distcc's lines", file: logPath)
    }

    /// Runs make through ProcessRunner with its output (stdout and stderr together)
    /// appended to the log as it arrives, and progress read from the same bytes. With
    /// shared slots, make holds one while it runs (its own first job) and takes the rest
    /// from their jobserver.
    private func runLogged(_ invocation: KbuildInvocation, logPath: String, label: String, slots: JobSlots? = nil, appending: Bool = false) async throws -> Int32 {
        if !appending {
            guard FileManager.default.createFile(atPath: logPath, contents: nil) else {
                throw UserError(.environment, "\(logPath): cannot create the build log")
            }
        }
        guard let log = FileHandle(forWritingAtPath: logPath) else {
            throw UserError(.environment, "\(logPath): cannot write the build log")
        }
        log.seekToEndOfFile()
        defer { try? log.close() }
        try? log.write(contentsOf: Data("# \(invocation.commandLine)\n".utf8))
        guard ProcessRunner.lookup(invocation.arguments[0]) != nil else {
            throw UserError(.environment, "make: not found in PATH; install it (apt-get install make)")
        }
        let progress = self.progress
        @Sendable func run() async throws -> Int32 {
            var watcher = ProgressWatcher(label: label)
            return try await ProcessRunner().stream(
                slots?.jobserverCommand(invocation.arguments) ?? invocation.arguments, workingDirectory: invocation.workingDirectory,
                extraEnvironment: invocation.environment, ownProcessGroup: true
            ) { chunk in
                // A full disk must not stop make half-way; the log is then short, as it was with make writing it.
                try? log.write(contentsOf: chunk)
                if let progress, let report = watcher.consume(chunk) { progress(report) }
            }
        }
        guard let slots else { return try await run() }
        if let jobserver = slots.jobserver {
            try? log.write(contentsOf: Data("# make takes its jobs from nvbuild's jobserver (\(jobserver.tokens) shared with the probe and every other kernel's build)\n".utf8))
        }
        return try await slots.run(run)
    }
}

/// Follows make's output line by line: objects compiled, then linking.
private struct ProgressWatcher {
    let label: String
    var compiled = 0
    var pending: [UInt8] = []

    init(label: String) { self.label = label }

    /// The progress after these bytes, when a line in them moved it.
    mutating func consume(_ chunk: [UInt8]) -> BuildProgress? {
        pending += chunk
        guard let lastNewline = pending.lastIndex(of: UInt8(ascii: "\n")) else { return nil }
        let complete = pending[..<lastNewline]
        pending.removeSubrange(...lastNewline)
        var last: String?
        var phase = BuildProgress.Phase.compiling
        for line in complete.split(separator: UInt8(ascii: "\n")) {
            let t = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespaces)
            if t.hasPrefix("CC [M]") || t.hasPrefix("CC ") {
                compiled += 1
                last = String(t.split(separator: " ").last ?? "")
            } else if t.hasPrefix("LD [M]") || t.hasPrefix("MODPOST") {
                phase = .linking
                last = String(t.split(separator: " ").last ?? "")
            }
        }
        guard let last else { return nil }
        return BuildProgress(label: label, phase: phase, compiledObjects: compiled, lastItem: URL(fileURLWithPath: last).lastPathComponent)
    }
}
