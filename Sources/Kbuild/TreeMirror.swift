import Foundation
import NVBuildSupport

/// Keeps a per-kernel copy of a driver tree for `M=` to build in, so builds
/// for several kernels never share objects and the source tree stays clean.
/// Files are hard-linked when possible (Kbuild writes new files next to the
/// sources, never into them) and copied otherwise; build products of an
/// in-place build are left out so a link can never be written through.
public enum TreeMirror {
    /// Names never carried into the copy: nvbuild's own folder and Kbuild outputs.
    static func isBuildProduct(_ name: String, isDirectory: Bool, atTop: Bool) -> Bool {
        if isDirectory {
            return name == ".nvbuild" || name == ".tmp_versions" || (atTop && name == "conftest") || name == ".git"
        }
        if name.hasPrefix(".") && name.hasSuffix(".cmd") { return true }
        for suffix in [".o", ".ko", ".mod", ".mod.c", ".mod.o", ".order", ".symvers", ".o.ur-safe", ".ko.xz", ".ko.zst", ".ko.gz"]
        where name.hasSuffix(suffix) {
            return true
        }
        return false
    }

    public static func sync(from source: String, to destination: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: destination, withIntermediateDirectories: true)
        try syncDirectory(source, destination, atTop: true)
    }

    private static func syncDirectory(_ source: String, _ destination: String, atTop: Bool) throws {
        let fm = FileManager.default
        let names: [String]
        do {
            names = try fm.contentsOfDirectory(atPath: source)
        } catch {
            throw UserError(.environment, "\(source): cannot list the directory: \(error.localizedDescription)")
        }
        for name in names {
            let from = "\(source)/\(name)"
            let to = "\(destination)/\(name)"
            var st = stat()
            guard lstat(from, &st) == 0 else { continue }
            let type = st.st_mode & S_IFMT
            if type == S_IFDIR {
                if isBuildProduct(name, isDirectory: true, atTop: atTop) { continue }
                try fm.createDirectory(atPath: to, withIntermediateDirectories: true)
                try syncDirectory(from, to, atTop: false)
            } else if type == S_IFLNK {
                let target = try fm.destinationOfSymbolicLink(atPath: from)
                if (try? fm.destinationOfSymbolicLink(atPath: to)) == target { continue }
                unlink(to)
                try fm.createSymbolicLink(atPath: to, withDestinationPath: target)
            } else if type == S_IFREG {
                if isBuildProduct(name, isDirectory: false, atTop: atTop) { continue }
                var existing = stat()
                if lstat(to, &existing) == 0 {
                    if existing.st_ino == st.st_ino && existing.st_dev == st.st_dev { continue }
                    if existing.st_size == st.st_size && existing.st_mtim.tv_sec == st.st_mtim.tv_sec
                        && existing.st_mtim.tv_nsec == st.st_mtim.tv_nsec
                    {
                        continue
                    }
                    unlink(to)
                }
                if link(from, to) != 0 {
                    try fm.copyItem(atPath: from, toPath: to)
                    // Keep the source's mtime so make sees the same ages as in the tree.
                    var times = [st.st_atim, st.st_mtim]
                    utimensat(AT_FDCWD, to, &times, 0)
                }
            }
        }
    }
}
