import ArgumentParser
import Foundation
import KernelTree
import ModuleELF
import ModuleGraph
import NVBuildSupport

struct ModulesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "modules",
        abstract: "Load order, loader simulation and real loads under qemu.",
        discussion: """
            Before libkmod reads a module tree, its binary indexes (modules.dep.bin, \
            modules.alias.bin, modules.symbols.bin, modules.builtin.bin, \
            modules.builtin.alias.bin) are checked: a corrupt or missing modules.dep.bin is \
            exit 2 naming the file and the `depmod -b ROOT RELEASE` that rewrites it. \
            libkmod's errors are reported, and a dependency that modules.dep names but \
            whose file is missing fails the order (exit 1) naming that file. A module path \
            that cannot be read (missing, no permission, not a regular file) is exit 2.
            """,
        subcommands: [ModulesOrderCommand.self, ModulesVerifyCommand.self, ModulesTryCommand.self]
    )
}

/// Where a modules subcommand finds the target kernel's module tree.
struct ModuleTreeOptions: ParsableArguments {
    @OptionGroup var kernel: KernelOptions

    @Option(help: "Base directory like depmod's -b: the tree is <DIR>/lib/modules/<release>.")
    var root: String?

    @Option(name: .customLong("config"), help: "A modprobe.d directory or file to read (repeatable; none by default, so the host's configuration does not apply).")
    var configDirectories: [String] = []

    /// The release and its module directory; a `--root` tree needs no headers.
    func resolveModuleDirectory() throws -> (release: String, directory: String, target: KernelTarget?) {
        if let root {
            guard let release = kernel.release else {
                throw UserError(.usage, "--root needs --kernel <release> to name the tree under \(root)/lib/modules")
            }
            return (release, "\(root)/lib/modules/\(release)", try? KernelDiscovery().kernel(release: release))
        }
        let (target, note) = try kernel.resolve()
        if let note { Terminal.note(note) }
        let directory = target.moduleDirectory ?? "/lib/modules/\(target.release)"
        return (target.release, directory, target)
    }
}

struct ModulesOrderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "order",
        abstract: "Print the load order exactly as `modprobe --show-depends -S <release>` does.",
        discussion: """
            Each argument is a module name, an alias, or the path of a module file; \
            paths join the graph with the `depends` of their modinfo. Nothing is read \
            from the host's loaded modules or, unless --config is given, its modprobe.d.

            Example:
              nvbuild modules order --kernel 6.12.117+deb12-amd64 ext4 nvidia.ko
            """
    )

    @OptionGroup var tree: ModuleTreeOptions
    @Flag(help: "Print JSON instead of modprobe's lines.") var json = false
    @Option(name: .customLong("from"), help: "Also read arguments from FILE, one per line ('-' for stdin); for thousands of names.")
    var argumentFile: String?
    @Argument(help: "Module names, aliases or module file paths.") var modules: [String] = []

    func run() async throws {
        let (_, directory, _) = try tree.resolveModuleDirectory()
        let arguments = try readArguments(modules, from: argumentFile)
        try ModuleTree.checkReadablePaths(arguments)
        let moduleTree = try ModuleTree(moduleDirectory: directory, configDirectories: tree.configDirectories)
        for diagnostic in moduleTree.diagnostics { Terminal.report(diagnostic) }
        let listings = moduleTree.dependencyListings(for: arguments)
        if json {
            try Terminal.json(listings)
        } else {
            var text = ""
            for listing in listings {
                // Paths come from the module indexes, which may be damaged: a control character in
                // one is shown escaped (lines of a sound index have none, so modprobe's bytes are kept).
                for line in listing.lines { text += Terminal.escaped(line) + "\n" }
            }
            FileHandle.standardOutput.write(Data(text.utf8))
            for listing in listings {
                for diagnostic in listing.diagnostics where diagnostic.severity != .error { Terminal.report(diagnostic) }
                if let error = listing.error { Terminal.error(error) }
            }
        }
        if listings.contains(where: { $0.error != nil }) { throw ExitCode(1) }
    }
}

/// Options shared by verify and try: what to load and which extra exports exist.
struct LoadOptions: ParsableArguments {
    @OptionGroup var tree: ModuleTreeOptions

    @Option(name: .customLong("extra-symvers"), help: "Module.symvers of another out-of-tree package whose exports these modules use (repeatable).")
    var extraSymvers: [String] = []

    @Flag(name: .customLong("no-deps"), help: "Load exactly the named modules, in the given order, without their dependencies.")
    var noDependencies = false

    @Flag(help: "Print JSON.") var json = false

    @Option(name: .customLong("from"), help: "Also read arguments from FILE, one per line ('-' for stdin); for thousands of modules.")
    var argumentFile: String?

    @Option(name: .customLong("kmod-version"), help: ArgumentHelp(
        "The kmod release whose modprobe loads the modules on the target (default: this machine's, from `kmod --version`).",
        discussion: "From 31 on, modprobe hands a compressed module to a kernel that unpacks its format itself (CONFIG_MODULE_DECOMPRESS), whose xz decoder accepts only a CRC32 or no integrity check; earlier releases decompress in user space.",
        valueName: "N"))
    var kmodVersion: Int?

    @Argument(help: "Module files, names or aliases, in the order to load them.") var modules: [String] = []

    /// How the target's modprobe hands compressed modules to the kernel: --kmod-version, else
    /// this machine's kmod (the usual target is the machine itself), else kmod 31's way.
    func compressedHandoff() async -> CompressedModuleHandoff {
        if let kmodVersion { return CompressedModuleHandoff(kmodVersion: kmodVersion) }
        guard ProcessRunner.lookup("kmod") != nil, let output = try? await ProcessRunner().run(["kmod", "--version"]),
              let version = CompressedModuleHandoff.kmodVersion(fromVersionOutput: output.standardOutput) else { return .kernel }
        return CompressedModuleHandoff(kmodVersion: version)
    }

    /// The tree, the kernel facts and the plan of modules to load.
    func prepare() throws -> (ModuleTree, KernelTarget, LoadPlan) {
        let (release, directory, target) = try tree.resolveModuleDirectory()
        guard let target else {
            throw UserError(.environment, "no kernel headers for \(release): the loader's checks need its Module.symvers and .config; install linux-headers-\(release)")
        }
        let arguments = try readArguments(modules, from: argumentFile)
        try ModuleTree.checkReadablePaths(arguments)
        let moduleTree = try ModuleTree(moduleDirectory: directory, configDirectories: tree.configDirectories)
        for diagnostic in moduleTree.diagnostics { Terminal.report(diagnostic) }
        let plan = moduleTree.loadPlan(for: arguments, dependencies: !noDependencies)
        return (moduleTree, target, plan)
    }

    func kernelModel(target: KernelTarget, tree moduleTree: ModuleTree) async throws -> KernelModel {
        var model = try KernelModel(target: target, tree: moduleTree)
        model.compressedHandoff = await compressedHandoff()
        for path in extraSymvers { try model.addSymvers(at: path) }
        return model
    }

    /// Prints the report shared by verify and try; exit status 1 when anything fails to load.
    func finish(_ report: LoadReport) throws {
        if json {
            try Terminal.json(report)
        } else {
            if let accelerator = report.accelerator { Terminal.out("qemu accelerator: \(accelerator.rawValue)") }
            if let signatures = report.signatures {
                var line = "signatures: " + (signatures.enforced ? "enforced" : "not enforced")
                line += signatures.lockdown == .none ? ", no lockdown" : ", lockdown \(signatures.lockdown.rawValue)"
                if !signatures.reasons.isEmpty { line += " (" + signatures.reasons.joined(separator: "; ") + ")" }
                Terminal.out(Terminal.escaped(line))
                for key in signatures.trusted {
                    let enrollment = key.needsEnrollment ? ", trusted only if enrolled as a MOK" : ""
                    Terminal.out(Terminal.escaped("trusted key: \(key.subject) (\(key.source)\(enrollment))"))
                }
            }
            if let handoff = report.compressedHandoff,
               report.plan.loads.contains(where: { [".xz", ".zst", ".gz"].contains(where: $0.path.hasSuffix) }) {
                Terminal.out(handoff == .kernel
                    ? "compressed modules: handed to the kernel, which unpacks its own format (kmod 31 and later)"
                    : "compressed modules: decompressed in user space first (kmod 30 and earlier)")
            }
            for diagnostic in report.diagnostics { Terminal.report(diagnostic) }
            for problem in report.plan.problems { Terminal.report(problem) }
            for name in report.plan.builtin { Terminal.note("\(name): built into the kernel, nothing to load") }
            for result in report.results {
                let verdict = result.loads ? Terminal.styled("loads", .green) : Terminal.styled("fails", .red)
                // Module names and kernel messages come from the module's own bytes.
                var line = "\(Terminal.escaped(result.module)): \(verdict)"
                if !result.loads { line += " (\(result.errnoName))" }
                Terminal.out(line)
                for message in result.messages { Terminal.out("  kernel: \(Terminal.escaped(message))") }
                if let signature = result.signature { Terminal.out("  signature: \(Terminal.escaped(signature.description))") }
                for note in result.notes { Terminal.out("  note: \(Terminal.escaped(note.message + note.remedySuffix))") }
            }
        }
        if !report.allLoad { throw ExitCode(1) }
    }
}

struct ModulesVerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Simulate the target kernel's loader: per module, loads or the exact kernel message.",
        discussion: """
            Modules load in the order `modules order` computes (or as given, with --no-deps) \
            into a freshly booted kernel. Exit status 1 when any module would fail to load.

            With --secure-boot, --trust, or signature enforcement (CONFIG_MODULE_SIG_FORCE, \
            module.sig_enforce=1 in --cmdline), each signature is checked cryptographically \
            against the certificates built into /boot/vmlinuz-<release>, the --trust ones and \
            the MOKs found here (unless --no-mok), as the kernel's module_sig_check decides: \
            unsigned, unknown key or unsupported crypto: EKEYREJECTED when enforced, EPERM under \
            lockdown, a taint otherwise; a signature that does not verify with a trusted key: \
            EKEYREJECTED always. Whether a MOK is enrolled is firmware state: check it with \
            `mokutil --test-key CERT`.

            Examples:
              nvbuild modules verify --kernel 6.12.117+deb12-amd64 out/nvidia.ko out/nvidia-modeset.ko
              nvbuild modules verify --secure-boot --trust /var/lib/dkms/mok.pub --kernel 6.1.0-56-amd64 out/nvidia.ko
            """
    )

    @OptionGroup var options: LoadOptions

    @Flag(name: .customLong("secure-boot"), help: """
        Predict a boot under UEFI Secure Boot: every signature is checked against the keys the \
        kernel trusts, and the kernel is locked down where its config ties lockdown to Secure Boot.
        """)
    var secureBoot = false

    @Option(name: .customLong("trust"), help: ArgumentHelp(
        "A certificate the kernel trusts besides those built into its vmlinuz: an enrolled MOK (PEM or DER; repeatable).",
        valueName: "cert"))
    var trust: [String] = []

    @Option(name: .customLong("cmdline"), help: ArgumentHelp(
        "The target's kernel command line; module.sig_enforce=1 and lockdown=integrity|confidentiality are honoured.",
        valueName: "text"))
    var commandLine: String?

    @Flag(name: .customLong("no-mok"), help: "Do not count the MOK certificates found here (/var/lib/shim-signed/mok, /var/lib/dkms/mok.pub) as trusted.")
    var noMachineOwnerKeys = false

    /// Where the image whose built-in certificates are trusted is: `<root>/boot` when a --root
    /// tree has the image, else the host's /boot (a --root tree is often modules only).
    static func bootDirectory(root: String?, release: String) -> String {
        guard let root, FileManager.default.fileExists(atPath: "\(root)/boot/vmlinuz-\(release)") else { return "/boot" }
        return root + "/boot"
    }

    func run() async throws {
        let (moduleTree, target, plan) = try options.prepare()
        var model = try await options.kernelModel(target: target, tree: moduleTree)
        model.signaturePolicy = try SignaturePolicy.make(
            target: target, secureBoot: secureBoot, commandLine: commandLine, trust: trust, machineOwnerKeys: !noMachineOwnerKeys,
            bootDirectory: Self.bootDirectory(root: options.tree.root, release: target.release))
        let results = try await moduleTree.simulate(plan, kernel: model)
        var report = LoadReport(kernel: target.release, method: "simulation", plan: plan, results: results)
        report.signatures = model.signaturePolicy?.summary
        report.compressedHandoff = model.compressedHandoff
        try options.finish(report)
    }
}

struct ModulesTryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "try",
        abstract: "Boot the target kernel under qemu, load the modules one syscall each, and report like verify.",
        discussion: """
            Boots /boot/vmlinuz-<release> with an initramfs holding the modules; a boot \
            that does not power off within --timeout seconds is killed and reported. qemu \
            runs under KVM when /dev/kvm opens read-write here and qemu can run the guest \
            under it, else under TCG (--accel); the report says which (JSON: "accelerator").

            --sig-enforce boots with module.sig_enforce=1 and --lockdown with lockdown=integrity; \
            the guest has no firmware keys, so only the certificates built into the kernel are trusted.

            Example:
              nvbuild modules try --kernel 6.1.0-56-amd64 ext4
              nvbuild modules try --sig-enforce --kernel 6.12.117+deb12-amd64 --no-deps out/nvidia.ko
            """
    )

    @OptionGroup var options: LoadOptions
    @Option(help: "Seconds before a boot is considered hung.") var timeout = 180
    @Option(help: "qemu accelerator: auto (KVM when /dev/kvm is usable, else TCG), kvm or tcg.")
    var accel: QemuTrial.AcceleratorChoice = .auto

    @Flag(name: .customLong("sig-enforce"), help: "Boot with module.sig_enforce=1: the kernel refuses modules without a valid signature by a key it trusts.")
    var sigEnforce = false

    @Flag(help: "Boot with lockdown=integrity, as a Secure Boot boot of a kernel built with CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT is.")
    var lockdown = false

    func run() async throws {
        _ = try QemuTrial.accelerator(for: accel)  // an unusable --accel kvm stops here, before any work
        let (_, target, plan) = try options.prepare()
        var trial = QemuTrial(target: target, timeoutSeconds: timeout, acceleration: accel)
        trial.compressedHandoff = await options.compressedHandoff()
        trial.extraCommandLine = ((sigEnforce ? ["module.sig_enforce=1"] : []) + (lockdown ? ["lockdown=integrity"] : [])).joined(separator: " ")
        let outcome = try await trial.run(plan.loads)
        var report = LoadReport(
            kernel: target.release, method: "qemu", plan: plan, results: outcome.results, accelerator: outcome.accelerator)
        report.compressedHandoff = trial.compressedHandoff
        if let why = outcome.kvmFailure {
            report.diagnostics.append(.note("qemu could not run the guest under KVM (\(why)); it ran under TCG", remedy: "--accel tcg skips the KVM attempt"))
        }
        if !outcome.completed {
            report.plan.problems.append(.warning("the qemu boot did not run to completion", remedy: "raise --timeout if the kernel boots slowly here"))
        }
        try options.finish(report)
    }
}

/// Command-line arguments plus those of a `--from` file (argument parsing of
/// thousands of words is slow; a file is not).
func readArguments(_ arguments: [String], from file: String?) throws -> [String] {
    guard let file else {
        if arguments.isEmpty { throw UserError(.usage, "name at least one module (or --from FILE)") }
        return arguments
    }
    let text: String
    if file == "-" {
        text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
    } else {
        text = try TextFile.read(file, kind: .usage, remedy: "check the --from path")
    }
    let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
    let all = arguments + lines.filter { !$0.isEmpty }
    if all.isEmpty { throw UserError(.usage, "\(file) names no modules") }
    return all
}

extension QemuTrial.AcceleratorChoice: ExpressibleByArgument {}

extension SignatureFinding: CustomStringConvertible {
    /// One line: the verdict, the key and what the kernel's check returns.
    public var description: String {
        var text: String
        switch verdict {
        case .valid: text = "valid, by \(certificate ?? "?")" + (certificateSource.map { " (\($0))" } ?? "")
        case .unknownKey: text = "signed by a key the kernel does not trust" + (key.map { ": \($0)" } ?? "")
        case .invalid: text = "does not verify" + (key.map { " with \($0)" } ?? "")
        case .unsigned: text = "unsigned"
        case .unsupported: text = "cannot be checked" + (key.map { " (\($0))" } ?? "")
        }
        return text + " [mod_verify_sig: \(kernelCheck)]"
    }
}
