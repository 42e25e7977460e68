import Crypto
import Foundation
import KernelTree
import NVBuildSupport
import SourceTree

/// The OS-agnostic cores of a full tree, built once for every kernel.
public struct BuiltCores: Sendable, Codable, Equatable {
    /// Kbuild-tree-relative `_binary` path → the built object.
    public var objects: [String: String]
    /// The cache key: the cores' sources, the make command and the compiler.
    public var key: String
    /// Taken from the cache rather than built by this run.
    public var reused: Bool
    public var seconds: Double
    public var logPath: String?
}

/// Builds a full tree's OS-agnostic cores (NVIDIA's nv-kernel.o, nv-modeset-kernel.o)
/// with their own makefiles, into a cache keyed by everything they are made of.
///
/// The cores do not depend on the kernel: their makefiles read no kernel headers and
/// take no kernel variable (no SYSSRC, KERNEL_UNAME or ARCH from Kbuild), and nvbuild
/// gives them none. So one build serves every kernel; what can change them is their
/// sources, the make variables nvbuild passes and the compiler, and those are the key.
/// The user's tree is not written: each core's make writes into the cache through its
/// `OUTPUTDIR`, not into `src/…/_out`.
public struct CoreBuilder: Sendable {
    /// `<cache>/cores`: one folder per key, each with a manifest sealing its objects.
    public var cacheDirectory: String
    public var jobs: Int
    /// `CC` for the cores' make; nil leaves make's own default (`cc`).
    public var compiler: CompilerCommand?

    public init(cacheDirectory: String, jobs: Int, compiler: CompilerCommand? = nil) {
        self.cacheDirectory = cacheDirectory
        self.jobs = jobs
        self.compiler = compiler
    }

    /// The make command for one core, as data: tested by equality before anything runs.
    public func makeCommand(for core: FullTree.Core, tree: FullTree, outputDirectory: String) -> [String] {
        var argv = ["make", "-C", "\(tree.root)/\(core.makeDirectory)", "-j\(max(1, jobs))",
                    "OUTPUTDIR=\(outputDirectory)", "OUTPUTDIR_ABSOLUTE=\(outputDirectory)"]
        if let compiler { argv.append("CC=\(compiler.shellText)") }
        return argv
    }

    /// The cores of `tree`, from the cache when an entry for the same key is intact, else
    /// built (make's output appended to `logPath`). A core whose make fails is an error
    /// naming the core, its folder and the log.
    /// With `reuse` false (`--no-cache`) an intact entry is rebuilt rather than taken.
    public func build(_ tree: FullTree, logPath: String?, reuse: Bool = true) async throws -> BuiltCores {
        let started = Date()
        let key = try await cacheKey(for: tree)
        let entry = "\(cacheDirectory)/\(key)"
        try createDirectory(cacheDirectory)
        // One builder per key at a time: a second nvbuild waits and then reuses the entry.
        let lock = try FileLock(path: "\(entry).lock")
        defer { lock.release() }
        if reuse, let objects = Self.intactEntry(entry, key: key, tree: tree) {
            return BuiltCores(objects: objects, key: key, reused: true, seconds: Date().timeIntervalSince(started), logPath: nil)
        }
        // A fixed path while building: objects that record where they were built are the
        // same for every build of the key. Renamed into place only once every core is made.
        let staging = "\(entry).building"
        try? FileManager.default.removeItem(atPath: staging)
        try? FileManager.default.removeItem(atPath: entry)
        try createDirectory(staging)
        var log = Data()
        for core in tree.cores {
            let output = "\(staging)/\(Self.outputFolder(of: core))"
            let argv = makeCommand(for: core, tree: tree, outputDirectory: output)
            log.append(Data("$ \(argv.joined(separator: " "))\n".utf8))
            let status = try await ProcessRunner().stream(argv, ownProcessGroup: true) { chunk in
                log.append(contentsOf: chunk)
            }
            if let logPath { try? AtomicFile.write(log, to: logPath, durable: false) }
            guard status == 0 else {
                let where_ = logPath.map { "; make's output: \($0)" } ?? ""
                throw UserError(.failed, "\(tree.root)/\(core.makeDirectory): building the core \(core.objectName) failed (make exited with status \(status))\(where_)")
            }
            guard FileManager.default.fileExists(atPath: "\(output)/\(core.objectName)") else {
                throw UserError(.failed, "\(tree.root)/\(core.makeDirectory): make succeeded but wrote no \(core.objectName) into its OUTPUTDIR")
            }
        }
        try AtomicFile.write(Data(Self.manifest(key: key, tree: tree, directory: staging).utf8), to: "\(staging)/MANIFEST", durable: false)
        guard rename(staging, entry) == 0 else {
            throw UserError(.environment, "\(entry): cannot move the built cores into the cache: \(String(cString: strerror(errno)))")
        }
        guard let objects = Self.intactEntry(entry, key: key, tree: tree) else {
            throw UserError(.environment, "\(entry): the cores just built do not match their manifest; the cache folder is being changed by something else")
        }
        return BuiltCores(objects: objects, key: key, reused: false, seconds: Date().timeIntervalSince(started), logPath: logPath)
    }

    // MARK: The key

    /// Every input of the cores: each file of the tree outside the Kbuild tree and build
    /// outputs (path and content), the cores' layout, the make variables and the compiler.
    public func cacheKey(for tree: FullTree) async throws -> String {
        var hasher = SHA256()
        hasher.update(data: Data("nvbuild-cores-v1\n".utf8))
        for core in tree.cores {
            hasher.update(data: Data("core \(core.makeDirectory) \(core.objectName) \(core.binaryPath)\n".utf8))
        }
        let compilerIdentity: String
        if let compiler {
            compilerIdentity = "CC=\(compiler.shellText)\n" + (try await compiler.identity())
        } else {
            compilerIdentity = "cc\n" + (try await CompilerCommand(compiler: "cc").identity())
        }
        hasher.update(data: Data("compiler \(compilerIdentity)\n".utf8))
        var files: [String] = []
        try Self.collectSources(root: tree.root, relative: "", skipping: [tree.kbuildDirectory], into: &files)
        for relative in files.sorted() {
            let path = "\(tree.root)/\(relative)"
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }
            hasher.update(data: Data("\(relative)\u{0}".utf8))
            if st.st_mode & S_IFMT == S_IFLNK {
                hasher.update(data: Data("link \((try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? "")\u{0}".utf8))
            } else {
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw UserError(.environment, "\(path): cannot read it (a source of the OS-agnostic cores)")
                }
                hasher.update(data: data)
            }
        }
        return String(hasher.finalize().hexString.prefix(32))
    }

    /// Folders never part of the cores' inputs: version control, nvbuild's own folder and
    /// the cores' default output folders (`_out`), which an earlier top-level make left.
    static let skippedDirectories: Set<String> = [".git", ".nvbuild", "_out", ".hg", ".svn"]

    static func collectSources(root: String, relative: String, skipping: Set<String>, into files: inout [String]) throws {
        let directory = relative.isEmpty ? root : "\(root)/\(relative)"
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw UserError(.environment, "\(directory): cannot list it: \(FileSystemError.cause(error))")
        }
        for name in names {
            let rel = relative.isEmpty ? name : "\(relative)/\(name)"
            if relative.isEmpty, skipping.contains(name) { continue }
            var st = stat()
            guard lstat("\(root)/\(rel)", &st) == 0 else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                if !skippedDirectories.contains(name) { try collectSources(root: root, relative: rel, skipping: skipping, into: &files) }
            case S_IFREG, S_IFLNK:
                files.append(rel)
            default:
                continue
            }
        }
    }

    // MARK: Cache entries

    /// A core's OUTPUTDIR inside an entry: its make folder, flattened (`src/nvidia` → `src_nvidia`).
    static func outputFolder(of core: FullTree.Core) -> String {
        core.makeDirectory.replacingOccurrences(of: "/", with: "_")
    }

    /// The manifest seals an entry to its key: the key, then per core its binary path,
    /// object file and the object's SHA-256.
    static func manifest(key: String, tree: FullTree, directory: String) -> String {
        var text = "nvbuild-cores 1\nkey \(key)\n"
        for core in tree.cores {
            let file = "\(outputFolder(of: core))/\(core.objectName)"
            let digest = FileManager.default.contents(atPath: "\(directory)/\(file)").map { SHA256.hash(data: $0).hexString } ?? "-"
            text += "core \(core.binaryPath) \(file) \(digest)\n"
        }
        return text
    }

    /// The entry's objects when its manifest names this key and every object still has
    /// the recorded digest; nil (a miss, rebuilt) otherwise.
    static func intactEntry(_ entry: String, key: String, tree: FullTree) -> [String: String]? {
        guard let recorded = try? String(contentsOfFile: "\(entry)/MANIFEST", encoding: .utf8),
              recorded == manifest(key: key, tree: tree, directory: entry),
              !recorded.contains(" -\n")
        else { return nil }
        var objects: [String: String] = [:]
        for core in tree.cores {
            objects[core.binaryPath] = "\(entry)/\(outputFolder(of: core))/\(core.objectName)"
        }
        return objects
    }

    private func createDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw UserError(.environment, "\(path): cannot create the folder: \(FileSystemError.cause(error))")
        }
    }
}

/// An exclusive `flock` on a lock file, held until released (or the process ends).
final class FileLock {
    private var descriptor: Int32

    init(path: String) throws {
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw UserError(.environment, "\(path): cannot open the lock file: \(String(cString: strerror(errno)))")
        }
        while flock(descriptor, LOCK_EX) != 0 {
            guard errno == EINTR else {
                let cause = String(cString: strerror(errno))
                close(descriptor)
                throw UserError(.environment, "\(path): cannot lock it: \(cause)")
            }
        }
    }

    func release() {
        if descriptor >= 0 { close(descriptor) }
        descriptor = -1
    }

    deinit { release() }
}
