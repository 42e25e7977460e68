import Crypto
import Foundation
import Mustache
import NVBuildSupport
import SourceTree

/// What goes into a generated dkms.conf.
public struct DKMSPackageSpec: Sendable, Equatable {
    public var name: String
    public var version: String
    public var modules: [ModuleSpec]
    public var nvidiaStyle: Bool
    public var rejectsPreemptRT: Bool
    /// Make's job count; nil leaves it to the machine that builds the package
    /// (DKMS's own `${parallel_jobs}`: its `-j` option, else that machine's CPU count).
    public var jobs: Int?
    public var destination: String
    /// For NVIDIA's whole source package: its Kbuild tree (`kernel-open`), where the
    /// modules are built; the package's top-level make builds the cores first. Empty for a
    /// package of a Kbuild tree.
    public var kbuildDirectory: String
    /// The Kbuild tree requests conftest results, which nvbuild's probe writes when installed.
    public var probes: Bool

    public init(name: String, version: String, tree: DriverTree, jobs: Int? = nil, destination: String = "/updates/dkms") {
        self.name = name
        self.version = version
        self.modules = tree.modules
        self.nvidiaStyle = tree.style == .nvidia
        self.rejectsPreemptRT = tree.rejectsPreemptRT
        self.jobs = jobs
        self.destination = destination
        self.kbuildDirectory = ""
        self.probes = tree.requestsConftest
    }

    /// A package of NVIDIA's whole source package: the modules are built in its Kbuild tree.
    public init(name: String, version: String, fullTree: FullTree, jobs: Int? = nil, destination: String = "/updates/dkms") {
        self.init(name: name, version: version, tree: fullTree.kbuildTree, jobs: jobs, destination: destination)
        kbuildDirectory = fullTree.kbuildDirectory
        modules = fullTree.kbuildTree.modules.map { module in
            var m = module
            m.location = module.location.isEmpty ? fullTree.kbuildDirectory : "\(fullTree.kbuildDirectory)/\(module.location)"
            m.kbuildFile = "\(fullTree.kbuildDirectory)/\(module.kbuildFile)"
            return m
        }
    }

    /// The longest --name or --version: `.<name>-<version>.tmp-<pid>`, the staging folder
    /// beside the package, must stay within a file name's 255 bytes.
    public static let maximumLength = 120

    /// DKMS puts these in paths and shell words: keep them to safe characters.
    public func validate() throws {
        let safe = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-~")
        for (label, value) in [("--name", name), ("--version", version)] {
            guard !value.isEmpty, value.unicodeScalars.allSatisfy(safe.contains), value.first != "-", value != ".", value != ".." else {
                throw UserError(.usage, "\(label) \"\(value)\": use only letters, digits and . _ + - ~ (DKMS uses it in /usr/src/<name>-<version> and in shell words)")
            }
            guard value.utf8.count <= Self.maximumLength else {
                throw UserError(.usage, "\(label) is \(value.utf8.count) characters long; DKMS makes it part of folder names (/usr/src/<name>-<version>), so use at most \(Self.maximumLength)")
            }
        }
        guard destination.hasPrefix("/kernel") || destination.hasPrefix("/updates") || destination.hasPrefix("/extra"),
            !destination.contains("\""), !destination.contains("$"), !destination.contains("`")
        else {
            throw UserError(.usage, "--dest-module-location \"\(destination)\": DKMS accepts only paths under /kernel, /updates or /extra")
        }
    }
}

public enum DKMSPackager {
    /// The package's dkms.conf template (Templates/dkms.conf.mustache, a package resource).
    public static var bundledTemplate: String { String(decoding: PackageResources.dkms_conf_mustache, as: UTF8.self) }

    /// Renders dkms.conf from a Mustache template (the bundled Templates/dkms.conf.mustache
    /// unless `template` is given).
    public static func renderConf(_ spec: DKMSPackageSpec, template: String? = nil, generator: String = "") throws -> String {
        let text = template ?? bundledTemplate
        let compiled: MustacheTemplate
        do {
            compiled = try MustacheTemplate(string: text)
        } catch {
            throw UserError(.usage, "dkms.conf template does not parse as Mustache: \(error)")
        }
        let modules: [[String: Any]] = spec.modules.enumerated().map { i, m in
            ["index": i, "name": m.name, "location": m.location, "destination": spec.destination]
        }
        let fullTree = !spec.kbuildDirectory.isEmpty
        let context: [String: Any] = [
            "name": spec.name, "version": spec.version, "modules": modules,
            "nvidia": spec.nvidiaStyle && !fullTree, "plain": !spec.nvidiaStyle && !fullTree,
            "fullTree": fullTree, "kbuildDirectory": spec.kbuildDirectory, "probes": spec.probes,
            "rejectsPreemptRT": spec.rejectsPreemptRT, "jobs": spec.jobs.map(String.init) ?? "${parallel_jobs}", "generator": generator,
        ]
        return compiled.render(context)
    }

    public struct Output: Sendable {
        public var directory: String
        public var confPath: String
        public var tarball: String?
        public var findings: [LintFinding]
        /// Every file the package holds, sorted by path.
        public var manifest: [PackageFile]
    }

    /// One file of a package, as `--json` lists it.
    public struct PackageFile: Sendable, Equatable, Codable {
        /// Relative to the package folder.
        public var path: String
        /// Permission bits, octal as `stat -c %a` prints them.
        public var mode: String
        public var size: Int
        public var sha256: String
    }

    /// Writes `<outputRoot>/<name>-<version>/` (tree copy plus dkms.conf) and,
    /// when asked, a tarball in the layout `dkms mktarball` writes and
    /// `dkms ldtarball` reads (`dkms_source_tree/` holding the sources). The
    /// folder appears whole or not at all; a lint error leaves nothing behind.
    ///
    /// With `sourceDateEpoch` (SOURCE_DATE_EPOCH, the reproducible-builds convention)
    /// the folder and the tarball are the same bytes on every run and machine: every
    /// mtime is that time, modes are 0644/0755 (0755 where any execute bit was set),
    /// tar entries are sorted, owned by 0:0 and compressed without a timestamp.
    ///
    /// With `fullTree` (NVIDIA's whole source package, whose Kbuild tree is `tree`) the
    /// package holds the whole package root: the cores' sources, which the package's own
    /// make builds on the target, and the Kbuild tree without its `_binary` links.
    public static func package(
        tree: DriverTree, spec: DKMSPackageSpec, outputRoot: String, tarball: String? = nil,
        template: String? = nil, generator: String = "", sourceDateEpoch: Int? = nil, fullTree: FullTree? = nil
    ) async throws -> Output {
        try spec.validate()
        let conf = try renderConf(spec, template: template, generator: generator)
        let final = "\(outputRoot)/\(spec.name)-\(spec.version)"
        let findings = DKMSLinter.lint(DKMSConf.parse(conf, path: "\(final)/dkms.conf"))
        if findings.contains(where: { $0.severity == .error }) {
            let errors = findings.filter { $0.severity == .error }.map { "line \($0.line): \($0.message) [\($0.rule)]" }
            throw UserError(.failed, "the rendered dkms.conf fails its lint, so nothing was written: " + errors.joined(separator: "; "))
        }
        // The tree's own dkms.conf is replaced by the rendered one. Scanned before
        // anything is written, so a refused symlink leaves no output folder.
        let sources: TreeMirror
        if let fullTree {
            // The package's make builds the cores and links them: a prebuilt core left in the
            // tree by an earlier build is not shipped in place of the sources.
            sources = try TreeMirror(scanning: fullTree.root, excludingTopLevel: ["dkms.conf"],
                                     excludingPaths: Set(fullTree.cores.map { "\(fullTree.kbuildDirectory)/\($0.binaryPath)" }))
        } else {
            sources = try TreeMirror(scanning: tree.path, excludingTopLevel: ["dkms.conf"], binaryCores: Set(tree.binaryCores))
        }
        // A core the Kbuild links but the tree lacks would fail only in the user's DKMS build.
        for core in tree.binaryCores where fullTree == nil && !sources.entries.contains(where: { $0.relativePath == core && $0.kind == .file }) {
            throw UserError(.failed, "\(tree.path)/\(core): missing; the tree's Kbuild links this binary core into its module, so a package without it cannot build (build NVIDIA's full tree first — `make` at the top of open-gpu-kernel-modules — or package a tree that holds the core)")
        }
        let fm = FileManager.default
        let createdOutputRoot = !fm.fileExists(atPath: outputRoot)
        do {
            try fm.createDirectory(atPath: outputRoot, withIntermediateDirectories: true)
        } catch {
            throw UserError.fileSystem(cannot: "create", outputRoot, error, remedy: "choose another --output")
        }
        var finished = false
        // A failure leaves no trace, not even the (then empty) --output folder it created.
        defer { if createdOutputRoot && !finished { rmdir(outputRoot) } }
        let staging = "\(outputRoot)/.\(spec.name)-\(spec.version).tmp-\(getpid())"
        try? fm.removeItem(atPath: staging)
        defer { try? fm.removeItem(atPath: staging) }
        do {
            try sources.write(to: staging, method: .copy)
            try AtomicFile.write(conf, to: "\(staging)/dkms.conf")
        } catch {
            throw UserError.fileSystem(cannot: "write the package in", outputRoot, error, remedy: "choose another --output")
        }
        if let sourceDateEpoch { try normalize(staging, mtime: sourceDateEpoch) }
        try checkModuleLocations(spec, in: staging, tree: fullTree?.root ?? tree.path)
        let manifest = try Self.manifest(of: staging)

        var tarballPath: String?
        if let tarball {
            tarballPath = try await writeTarball(sourceDirectory: staging, to: tarball, sourceDateEpoch: sourceDateEpoch)
        }
        do {
            if fm.fileExists(atPath: final) {
                let old = "\(outputRoot)/.\(spec.name)-\(spec.version).old-\(getpid())"
                try fm.moveItem(atPath: final, toPath: old)
                do {
                    try fm.moveItem(atPath: staging, toPath: final)
                } catch {
                    try? fm.moveItem(atPath: old, toPath: final)  // the earlier package stays as it was
                    throw error
                }
                try? fm.removeItem(atPath: old)
            } else {
                try fm.moveItem(atPath: staging, toPath: final)
            }
        } catch {
            throw UserError.fileSystem(cannot: "replace", final, error, remedy: "remove it or choose another --output")
        }
        finished = true
        return Output(directory: final, confPath: "\(final)/dkms.conf", tarball: tarballPath, findings: findings, manifest: manifest)
    }

    /// DKMS looks for each built module in its BUILT_MODULE_LOCATION: a folder the
    /// package lacks (left out, or named by a Kbuild the copy does not carry) would fail
    /// only on the user's machine, after the build.
    static func checkModuleLocations(_ spec: DKMSPackageSpec, in staging: String, tree: String) throws {
        for module in spec.modules where !module.location.isEmpty {
            var info = stat()
            guard stat("\(staging)/\(module.location)", &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
                throw UserError(.failed, "\(tree)/\(module.kbuildFile): module \(module.name) is built in \(module.location)/, which the package would not contain (BUILT_MODULE_LOCATION must exist in the package); check that folder is part of the tree")
            }
        }
    }

    /// Path, mode, size and SHA-256 of every regular file under `root`, sorted by path.
    static func manifest(of root: String) throws -> [PackageFile] {
        let paths = try FileManager.default.subpathsOfDirectory(atPath: root).sorted()
        return try paths.compactMap { relative in
            let path = "\(root)/\(relative)"
            var info = stat()
            guard lstat(path, &info) == 0 else { throw UserError(.environment, "\(path): \(String(cString: strerror(errno)))") }
            guard info.st_mode & S_IFMT == S_IFREG else { return nil }
            guard let data = FileManager.default.contents(atPath: path) else {
                throw UserError(.environment, "\(path): cannot read the file back to list it: \(String(cString: strerror(errno)))")
            }
            let digest = SHA256.hash(data: data).hexString
            return PackageFile(path: relative, mode: String(info.st_mode & 0o7777, radix: 8), size: Int(info.st_size), sha256: digest)
        }
    }

    /// `tar` writes the archive to a temporary name that is renamed into place.
    static func writeTarball(sourceDirectory: String, to path: String, sourceDateEpoch: Int? = nil) async throws -> String {
        let target = URL(fileURLWithPath: path).standardizedFileURL.path
        let directory = URL(fileURLWithPath: target).deletingLastPathComponent().path
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw UserError.fileSystem(cannot: "create", directory, error, remedy: "choose another --tarball")
        }
        let stage = "\(directory)/.dkms-tarball-\(getpid())"
        try? fm.removeItem(atPath: stage)
        defer { try? fm.removeItem(atPath: stage) }
        do {
            try fm.createDirectory(atPath: stage, withIntermediateDirectories: true)
            try TreeMirror(scanning: sourceDirectory, excludingTopLevel: ["dkms.conf"]).write(to: "\(stage)/dkms_source_tree", method: .copy)
            // mktarball also writes dkms_main_tree/ (prebuilt modules); ldtarball accepts it empty.
            try fm.createDirectory(atPath: "\(stage)/dkms_main_tree", withIntermediateDirectories: true)
            try fm.copyItem(atPath: "\(sourceDirectory)/dkms.conf", toPath: "\(stage)/dkms_source_tree/dkms.conf")
        } catch {
            throw UserError.fileSystem(cannot: "write the tarball's files in", directory, error, remedy: "choose another --tarball")
        }
        let temporary = "\(directory)/.\(URL(fileURLWithPath: target).lastPathComponent).tmp-\(getpid())"
        // gzip -n: no name or timestamp in the gzip header; xz, zstd and bzip2 store none.
        let compression = target.hasSuffix(".xz") ? "-J" : target.hasSuffix(".zst") ? "--zstd" : target.hasSuffix(".bz2") ? "-j" : "--use-compress-program=gzip -n"
        var arguments = ["tar", compression, "--format=gnu", "--sort=name", "--owner=0", "--group=0", "--numeric-owner"]
        if let sourceDateEpoch {
            try normalize(stage, mtime: sourceDateEpoch)
            arguments.append("--mtime=@\(sourceDateEpoch)")
        }
        let out = try await ProcessRunner().run(arguments + ["-cf", temporary, "-C", stage, "dkms_main_tree", "dkms_source_tree"])
        guard out.succeeded else {
            unlink(temporary)
            throw UserError(.environment, "tar could not write \(target): \(out.standardError.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        guard rename(temporary, target) == 0 else {
            unlink(temporary)
            throw UserError(.environment, FileSystemError.sentence(cannot: "write", target, POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO), remedy: "choose another --tarball"))
        }
        return target
    }

    /// Fixed mtimes and umask-independent modes for everything under `root` (no
    /// symlinks exist there: the tree copy resolves them).
    static func normalize(_ root: String, mtime: Int) throws {
        let fm = FileManager.default
        var paths: [String]
        do {
            paths = try fm.subpathsOfDirectory(atPath: root).map { root + "/" + $0 }
        } catch {
            throw UserError.fileSystem(cannot: "read", root, error)
        }
        paths.append(root)
        let times = [timespec(tv_sec: mtime, tv_nsec: 0), timespec(tv_sec: mtime, tv_nsec: 0)]
        for path in paths {
            var info = stat()
            guard lstat(path, &info) == 0 else { throw UserError(.environment, "\(path): \(FileSystemError.cause(errno: errno))") }
            let isDirectory = info.st_mode & S_IFMT == S_IFDIR
            let executable = isDirectory || info.st_mode & 0o111 != 0
            guard chmod(path, executable ? 0o755 : 0o644) == 0,
                  utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW) == 0
            else { throw UserError(.environment, "\(path): cannot set its mode and time: \(FileSystemError.cause(errno: errno))") }
        }
    }
}
