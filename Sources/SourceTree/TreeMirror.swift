import Foundation
import NVBuildSupport

/// The one way a driver tree is copied: into `nvbuild build`'s per-kernel build
/// folder and into a DKMS package. A mirror is scanned first and written second,
/// so a tree that cannot be copied (a symlink it must not follow) is refused
/// before anything is written. Files are always copied (or reflinked), never
/// hard-linked: a build step that writes its copy in place must not reach the
/// user's tree.
///
/// Symlinks: one whose target resolves inside the tree is copied as the file or
/// directory it points to. Dereferencing, rather than keeping a relative link,
/// means the copy holds no link at all: nothing in a package or build folder can
/// point back into the user's tree, a link to a file the filter leaves out
/// cannot dangle in the copy, and tar and DKMS see plain files everywhere. A
/// dangling link and an absolute one (it names a place on this machine, not in
/// the tree) are always refused. A relative link whose target lies outside the
/// tree is refused for a package, which must be self-contained; a build copy
/// (`OutsideLinks.copyFiles`) copies the file it reaches, as `make M=$PWD` in the
/// tree itself would read it. A link to a folder outside the tree is refused for
/// both: following it would copy an unbounded part of the machine.
public struct TreeMirror: Sendable {
    /// One thing the copy holds, by its path relative to the tree.
    public struct Entry: Sendable, Equatable {
        public enum Kind: Sendable, Equatable { case directory, file }
        public var relativePath: String
        public var kind: Kind
        /// The file whose bytes are copied: the tree's own file, or a symlink's resolved in-tree target.
        public var source: String
    }

    /// The tree's real path (symlinks in the path itself resolved).
    public var root: String
    /// Parents before children, names sorted, so writing is deterministic.
    public var entries: [Entry]
    /// What a relative link to something outside the tree becomes.
    public var outsideLinks: OutsideLinks

    public enum OutsideLinks: Sendable, Equatable {
        /// Refused, naming the link and its target: a DKMS package must be self-contained.
        case refuse
        /// A link to an existing regular file outside the tree is copied as that file:
        /// the build copy then reads what the tree's own `make M=$PWD` would.
        case copyFiles
    }

    /// Walks `path`, leaving out build products and the top-level names in
    /// `excludingTopLevel` (a package's own dkms.conf), and resolving symlinks.
    /// Relative paths of prebuilt binary objects the tree's Kbuild links into its modules
    /// (NVIDIA's `nvidia/nv-kernel.o_binary`): NVIDIA's top-level make leaves them as links
    /// into its `src/…/_out` folders, outside `kernel-open/`. Such a link is copied from its
    /// target, whatever the outside-link rule; a dangling one is refused with the remedy.
    public var binaryCores: Set<String>
    /// Files the copy takes from elsewhere instead of the tree, by relative path (the cores
    /// `nvbuild build` built from a full tree): whatever the tree holds there — a file, a
    /// link, or nothing — is not read.
    public var providedFiles: [String: String]
    /// Relative paths left out wherever they are (a full tree's package leaves out the
    /// `_binary` links its own make recreates from the cores it builds).
    public var excludedPaths: Set<String>

    public init(scanning path: String, excludingTopLevel: Set<String> = [], outsideLinks: OutsideLinks = .refuse,
                binaryCores: Set<String> = [], providedFiles: [String: String] = [:], excludingPaths: Set<String> = []) throws {
        guard let real = Self.realPath(path) else {
            throw UserError(.usage, "\(path): cannot read the tree: \(String(cString: strerror(errno)))")
        }
        root = real
        entries = []
        self.outsideLinks = outsideLinks
        self.binaryCores = binaryCores
        self.providedFiles = providedFiles
        self.excludedPaths = excludingPaths
        try scan(directory: real, relative: "", ancestors: [real], excluding: excludingTopLevel)
        for (relative, source) in providedFiles.sorted(by: { $0.key < $1.key }) {
            let parent = (relative as NSString).deletingLastPathComponent
            guard parent.isEmpty || entries.contains(where: { $0.relativePath == parent && $0.kind == .directory }) else {
                throw UserError(.usage, "\(root)/\(parent): missing; it should hold \((relative as NSString).lastPathComponent)")
            }
            entries.append(Entry(relativePath: relative, kind: .file, source: source))
        }
    }

    // MARK: The build-product filter

    /// Directories never copied: nvbuild's own folder, Kbuild's scratch folder,
    /// version-control metadata, and the conftest/ output at the top (the probe or
    /// the tree's own Kbuild writes it afresh for each kernel).
    /// `_out` is where NVIDIA's core makefiles write their objects (`src/nvidia/_out/…`).
    static let excludedDirectories: Set<String> = [".nvbuild", ".tmp_versions", ".git", ".hg", ".svn", "_out"]
    /// File names Kbuild writes next to the sources: objects, modules (also
    /// compressed), .mod/.mod.c, modules.order, Module.symvers.
    /// Version-control files a checkout carries beside the sources: they describe the
    /// repository, not the build, and must not reach a package.
    static let versionControlFiles: Set<String> = [".gitignore", ".gitattributes", ".gitmodules", ".mailmap", ".hgignore", ".hgtags", ".cvsignore", ".bzrignore"]
    static let buildProductSuffixes = [
        ".o", ".ko", ".mod", ".mod.c", ".mod.o", ".order", ".symvers", ".o.ur-safe", ".ko.xz", ".ko.zst", ".ko.gz",
    ]

    /// True for a name that an earlier build or a checkout put in the tree and
    /// that a copy must not carry (it would be stale, or written through).
    public static func isBuildProduct(_ name: String, isDirectory: Bool, atTop: Bool) -> Bool {
        // `.git` is a file in worktrees and submodules.
        if name == ".git" || versionControlFiles.contains(name) { return true }
        if isDirectory {
            return excludedDirectories.contains(name) || (atTop && name == "conftest")
        }
        // Kbuild's per-target command files: .foo.o.cmd, .foo.ko.cmd.
        if name.hasPrefix(".") && name.hasSuffix(".cmd") { return true }
        return buildProductSuffixes.contains { name.hasSuffix($0) }
    }

    // MARK: Scanning

    private mutating func scan(directory: String, relative: String, ancestors: [String], excluding: Set<String>) throws {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw UserError(.environment, "\(directory): cannot list the directory: \(String(cString: strerror(errno)))")
        }
        let atTop = relative.isEmpty
        for name in names.sorted() {
            if atTop && excluding.contains(name) { continue }
            let path = "\(directory)/\(name)"
            let rel = atTop ? name : "\(relative)/\(name)"
            if providedFiles[rel] != nil || excludedPaths.contains(rel) { continue }
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }
            var type = st.st_mode & S_IFMT
            var source = path
            if type == S_IFLNK {
                // The link's own name decides whether it is a build product, as for a file.
                var target = stat()
                let isDirectory = stat(path, &target) == 0 && target.st_mode & S_IFMT == S_IFDIR
                if Self.isBuildProduct(name, isDirectory: isDirectory, atTop: atTop) { continue }
                source = try resolveLink(path, displayPath: rel)
                type = target.st_mode & S_IFMT
            } else if Self.isBuildProduct(name, isDirectory: type == S_IFDIR, atTop: atTop) {
                continue
            }
            if type == S_IFDIR {
                if ancestors.contains(source) {
                    let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? source
                    throw UserError(.failed, "\(root)/\(rel): symbolic link to \(target) points at a folder that contains the link itself, so copying it would never end; remove the link")
                }
                entries.append(Entry(relativePath: rel, kind: .directory, source: source))
                try scan(directory: source, relative: rel, ancestors: ancestors + [source], excluding: excluding)
            } else if type == S_IFREG {
                entries.append(Entry(relativePath: rel, kind: .file, source: source))
            }
            // FIFOs, sockets and devices are not sources; they are left out as before.
        }
    }

    /// The real path of a symlink's target when it lies inside the tree; otherwise the refusal.
    private func resolveLink(_ path: String, displayPath rel: String) throws -> String {
        let link = "\(root)/\(rel)"
        let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? "?"
        let remedy = "replace the link with a copy of the file it should provide, or remove it"
        if binaryCores.contains(rel) {
            var st = stat()
            guard let resolved = Self.realPath(path), stat(resolved, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
                throw UserError(.failed, "\(link): symbolic link to \(target), which does not exist; it is the binary core the tree's Kbuild links into its module (build NVIDIA's full tree first — `make` at the top of open-gpu-kernel-modules — so the core exists, or copy the core there)")
            }
            return resolved
        }
        if target.hasPrefix("/") {
            throw UserError(.failed, "\(link): symbolic link to \(target), an absolute path, which names a place on this machine rather than a file in the tree; nvbuild copies only links that resolve inside \(root) (\(remedy))")
        }
        guard let resolved = Self.realPath(path) else {
            throw UserError(.failed, "\(link): symbolic link to \(target), which does not exist (a dangling link); nvbuild copies only links that resolve inside \(root) (\(remedy))")
        }
        guard resolved.hasPrefix(root + "/") else {
            guard case .copyFiles = outsideLinks else {
                throw UserError(.failed, "\(link): symbolic link to \(target), which resolves to \(resolved), outside the tree \(root); a package holds only links that resolve inside the tree (\(remedy))")
            }
            var st = stat()
            guard stat(resolved, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
                throw UserError(.failed, "\(link): symbolic link to \(target), which resolves to \(resolved), a folder (or special file) outside the tree \(root); a build copy takes single files from outside the tree, not folders (link the files the build needs, or move the folder into the tree)")
            }
            return resolved
        }
        return resolved
    }

    static func realPath(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }

    // MARK: Writing

    public enum Method: Sendable {
        /// Copy files, keeping those already in place (same size and mtime, and not
        /// the tree's own file through a hard link an older nvbuild made), so a second
        /// build for the same kernel only refreshes what changed.
        case sync
        /// Copy every file afresh.
        case copy
    }

    /// Writes the mirror into `destination` (created when missing). Files keep
    /// their mtime, so make sees the same ages as in the tree.
    public func write(to destination: String, method: Method) throws {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: destination, withIntermediateDirectories: true)
        } catch {
            throw UserError(.environment, "\(destination): cannot create the folder: \(String(cString: strerror(errno)))")
        }
        for entry in entries {
            let to = "\(destination)/\(entry.relativePath)"
            switch entry.kind {
            case .directory:
                try makeDirectory(to)
            case .file:
                var st = stat()
                guard stat(entry.source, &st) == 0 else {
                    throw UserError(.environment, "\(entry.source): cannot read: \(String(cString: strerror(errno)))")
                }
                var existing = stat()
                if lstat(to, &existing) == 0 {
                    let isFile = existing.st_mode & S_IFMT == S_IFREG
                    // A file sharing the tree's inode is a hard link: replaced, never kept.
                    let sharesStorage = existing.st_ino == st.st_ino && existing.st_dev == st.st_dev
                    if case .sync = method, isFile, !sharesStorage, existing.st_size == st.st_size,
                        existing.st_mtim.tv_sec == st.st_mtim.tv_sec, existing.st_mtim.tv_nsec == st.st_mtim.tv_nsec
                    {
                        continue
                    }
                    try remove(to, isDirectory: existing.st_mode & S_IFMT == S_IFDIR)
                }
                try FileCopy.copy(from: entry.source, to: to)
            }
        }
    }

    /// Creates a directory, replacing whatever else sits at that name: an old
    /// symlink there would otherwise let the copy write through it.
    private func makeDirectory(_ path: String) throws {
        var st = stat()
        if lstat(path, &st) == 0 {
            if st.st_mode & S_IFMT == S_IFDIR { return }
            try remove(path, isDirectory: false)
        }
        guard mkdir(path, 0o777) == 0 || errno == EEXIST else {
            throw UserError(.environment, "\(path): cannot create the folder: \(String(cString: strerror(errno)))")
        }
    }

    private func remove(_ path: String, isDirectory: Bool) throws {
        if isDirectory {
            do {
                try FileManager.default.removeItem(atPath: path)
            } catch {
                throw UserError(.environment, "\(path): cannot replace it: \(String(cString: strerror(errno)))")
            }
        } else if unlink(path) != 0 {
            throw UserError(.environment, "\(path): cannot replace it: \(String(cString: strerror(errno)))")
        }
    }
}
