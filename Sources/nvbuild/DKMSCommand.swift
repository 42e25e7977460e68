import ArgumentParser
import DKMS
import Foundation
import NVBuildSupport
import SourceTree

struct DKMSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dkms",
        abstract: "Package a tree for DKMS and lint dkms.conf without executing it.",
        subcommands: [DKMSPackageCommand.self, DKMSLintCommand.self]
    )
}

struct DKMSPackageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "package",
        abstract: "Write a DKMS source tree (NAME-VERSION/ with the sources and a generated dkms.conf).",
        discussion: """
            dkms.conf is rendered from Templates/dkms.conf.mustache (a copy is built in; \
            --template uses another file) with one BUILT_MODULE_NAME/BUILT_MODULE_LOCATION/\
            DEST_MODULE_LOCATION record per module the tree's Kbuild files add to obj-m, \
            and is linted before anything is written. The output folder appears whole or not at all. \
            The sources are copied without build products or VCS files; symlinks inside the \
            tree are copied as the files they point to, a binary core the Kbuild links (NVIDIA's \
            nv-kernel.o_binary) from its target, and a dangling, absolute or tree-leaving \
            symlink is refused (exit 1) before anything is written, as is a missing binary core \
            or a BUILT_MODULE_LOCATION the package would lack. --tree may be NVIDIA's whole \
            source package (the root of open-gpu-kernel-modules): the package then holds it \
            whole, without build outputs (_out/) or _binary links, and its MAKE[0] runs the \
            top-level make, which builds the OS-agnostic cores and then kernel-open/ for the \
            kernel (after `nvbuild probe --tree kernel-open` where nvbuild is installed). \
            --json lists the manifest. MAKE[0] runs make with DKMS's own \
            ${parallel_jobs} (dkms -j, else the CPU count of the machine that builds it) unless \
            --jobs fixes a count. With SOURCE_DATE_EPOCH set, the folder and the tarball are \
            reproducible: the same bytes on every run and machine.

            Example:
              nvbuild dkms package --tree kernel-open --name nvidia --version 595.45.04 --output /usr/src
              dkms add nvidia/595.45.04 && dkms install nvidia/595.45.04 -k $(uname -r)
              nvbuild dkms package --tree . --name hello --version 1.0 --tarball hello-1.0.dkms.tar.gz
              dkms ldtarball hello-1.0.dkms.tar.gz
            """
    )

    @Option(help: "The driver tree (its top Kbuild/Makefile).") var tree: String = "."
    @Option(help: "DKMS package name (PACKAGE_NAME).") var name: String
    @Option(help: "DKMS package version (PACKAGE_VERSION).") var version: String
    @Option(help: "Folder that receives NAME-VERSION/.") var output: String = "."
    @Option(help: "Also write a tarball that `dkms ldtarball` loads (.tar.gz, .tar.xz, .tar.zst).") var tarball: String?
    @Option(help: "A fixed make job count for MAKE[0] (default: DKMS's ${parallel_jobs} on the machine that builds it).") var jobs: Int?
    @Option(help: "DEST_MODULE_LOCATION for every module.") var destModuleLocation: String = "/updates/dkms"
    @Option(help: "A Mustache template to render instead of the built-in dkms.conf template.") var template: String?
    @Flag(help: "Print JSON instead of text: the package folder, its modules, lint findings and the manifest (path, mode, size, sha256 of every file).") var json = false

    func run() async throws {
        // NVIDIA's whole source package is packaged whole: its make builds the cores on the target.
        let fullTree = try FullTree.detect(path: tree)
        let driverTree = try fullTree?.kbuildTree ?? DriverTree.load(path: tree)
        var templateText: String?
        if let template {
            templateText = try TextFile.read(template, kind: .usage, remedy: "pass a readable .mustache file")
        }
        let spec = fullTree.map { DKMSPackageSpec(name: name, version: version, fullTree: $0, jobs: jobs, destination: destModuleLocation) }
            ?? DKMSPackageSpec(name: name, version: version, tree: driverTree, jobs: jobs, destination: destModuleLocation)
        // The reproducible-builds convention: a fixed time makes the package the same bytes anywhere.
        var sourceDateEpoch: Int?
        if let text = ProcessInfo.processInfo.environment["SOURCE_DATE_EPOCH"], !text.isEmpty {
            guard let value = Int(text), value >= 0 else {
                throw UserError(.usage, "SOURCE_DATE_EPOCH=\(text) is not a number of seconds since 1970 (unset it or give e.g. $(git log -1 --format=%ct))")
            }
            sourceDateEpoch = value
        }
        let result = try await DKMSPackager.package(
            tree: driverTree, spec: spec, outputRoot: output, tarball: tarball, template: templateText, generator: NVBuild.version,
            sourceDateEpoch: sourceDateEpoch, fullTree: fullTree)
        if json {
            struct Report: Encodable {
                var directory: String
                var dkmsConf: String
                var tarball: String?
                var modules: [String]
                var findings: [LintFinding]
                var manifest: [DKMSPackager.PackageFile]
            }
            try Terminal.json(Report(directory: result.directory, dkmsConf: result.confPath, tarball: result.tarball, modules: driverTree.moduleNames,
                                     findings: result.findings, manifest: result.manifest))
            return
        }
        for f in result.findings { Terminal.report(f.reported) }
        Terminal.out("wrote \(result.directory) (\(driverTree.modules.count) module\(driverTree.modules.count == 1 ? "" : "s"): \(driverTree.moduleNames.joined(separator: ", ")))")
        if let t = result.tarball { Terminal.out("wrote \(t)") }
    }
}

extension LintFinding {
    /// The finding as the terminal shows it: its diagnostic, with the rule named after the message.
    var reported: Diagnostic {
        var d = diagnostic
        d.message += " [\(rule)]"
        return d
    }
}

struct DKMSLintCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lint",
        abstract: "Check dkms.conf files without executing them.",
        discussion: """
            Reports unknown or misspelled directives, gaps in array indices, missing \
            required fields, MAKE lines DKMS rewrites, hook scripts (PRE_BUILD, POST_BUILD, \
            PRE_INSTALL, POST_INSTALL, POST_ADD, POST_REMOVE) named by an absolute path or \
            leaving the package with `..`, and any command substitution, \
            backtick, shell statement or expansion other than DKMS's own variables, \
            each with file:line and a fix. The file is parsed, never sourced; it must be UTF-8.
            Exit status: 0 no errors (warnings allowed unless --strict), 1 findings, 2 unreadable file.

            Example:
              nvbuild dkms lint /usr/src/nvidia-595.45.04/dkms.conf
            """
    )

    @Argument(help: "dkms.conf files to check.") var files: [String]
    @Flag(help: "Treat warnings as failures too.") var strict = false
    @Flag(help: "Print JSON instead of text.") var json = false

    func run() async throws {
        guard !files.isEmpty else { throw UserError(.usage, "name at least one dkms.conf to check") }
        var all: [LintFinding] = []
        for file in files {
            do {
                all += try DKMSLinter.lint(path: file)
            } catch let error as DKMSError {
                throw UserError(.environment, error.description)
            }
        }
        if json {
            try Terminal.json(all)
        } else {
            for f in all { Terminal.report(f.reported) }
        }
        let failing = all.filter { strict || $0.severity == .error }
        if !failing.isEmpty { throw ExitCode(1) }
    }
}
