import DKMS
import Foundation
import Kbuild
import KernelTree
import NVBuildSupport
import SourceTree
import Testing

/// The one tree copy, on real trees in a temporary folder: what it leaves out,
/// how it treats symlinks, and that a refused link writes nothing.
@Suite("tree mirror")
struct TreeMirrorTests {
    /// A plain module tree plus build products of an earlier in-place build and in-tree links.
    static func makeTree(_ label: String) throws -> (root: String, tree: String) {
        let root = try Fixtures.temporaryDirectory(label)
        let tree = "\(root)/tree"
        let fm = FileManager.default
        try fm.copyItem(atPath: Fixtures.plainModule, toPath: tree)
        try fm.createDirectory(atPath: "\(tree)/include", withIntermediateDirectories: true)
        try "#define X 1\n".write(toFile: "\(tree)/include/x.h", atomically: false, encoding: .utf8)
        for product in ["nvbuild_plain.o", "nvbuild_plain.ko", "nvbuild_plain.mod", "nvbuild_plain.mod.c", ".nvbuild_plain.o.cmd",
                        "modules.order", "Module.symvers", "nvbuild_plain.ko.xz", ".git"]
        {
            try "stale\n".write(toFile: "\(tree)/\(product)", atomically: false, encoding: .utf8)
        }
        for directory in ["conftest", ".nvbuild/build", ".tmp_versions", ".hg", "include/conftest"] {
            try fm.createDirectory(atPath: "\(tree)/\(directory)", withIntermediateDirectories: true)
            try "x\n".write(toFile: "\(tree)/\(directory)/f.h", atomically: false, encoding: .utf8)
        }
        try fm.createSymbolicLink(atPath: "\(tree)/alias.h", withDestinationPath: "include/x.h")
        try fm.createSymbolicLink(atPath: "\(tree)/headers", withDestinationPath: "include")
        // A link to a build product is itself a build product by its name.
        try fm.createSymbolicLink(atPath: "\(tree)/linked.o", withDestinationPath: "/nonexistent/linked.o")
        return (root, tree)
    }

    static func files(under directory: String) -> [String: String] {
        var result: [String: String] = [:]
        let enumerator = FileManager.default.enumerator(atPath: directory)
        while let path = enumerator?.nextObject() as? String {
            var st = stat()
            lstat("\(directory)/\(path)", &st)
            let type = st.st_mode & S_IFMT
            result[path] = type == S_IFLNK ? "link" : type == S_IFDIR ? "dir" : "file"
        }
        return result
    }

    @Test func leavesOutBuildProductsAndDereferencesInTreeLinks() throws {
        let (root, tree) = try Self.makeTree("mirror-filter")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let mirror = try TreeMirror(scanning: tree)
        try mirror.write(to: "\(root)/copy", method: .copy)
        #expect(Self.files(under: "\(root)/copy") == [
            "Kbuild": "file", "Makefile": "file", "nvbuild_plain.c": "file",
            "include": "dir", "include/x.h": "file", "include/conftest": "dir", "include/conftest/f.h": "file",
            "alias.h": "file", "headers": "dir", "headers/x.h": "file", "headers/conftest": "dir", "headers/conftest/f.h": "file",
        ])
        #expect(try String(contentsOfFile: "\(root)/copy/alias.h", encoding: .utf8) == "#define X 1\n")
        // A package shares no storage with the tree.
        var source = stat(), copy = stat()
        stat("\(tree)/nvbuild_plain.c", &source)
        stat("\(root)/copy/nvbuild_plain.c", &copy)
        #expect(source.st_ino != copy.st_ino)
        #expect(source.st_mtim.tv_sec == copy.st_mtim.tv_sec)
    }

    @Test func buildSyncReplacesAnOldLinkInsteadOfWritingThroughIt() throws {
        let (root, tree) = try Self.makeTree("mirror-sync")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fm = FileManager.default
        let outside = "\(root)/outside"
        try fm.createDirectory(atPath: outside, withIntermediateDirectories: true)
        // What an older build copy held: the links themselves.
        try fm.createDirectory(atPath: "\(root)/build", withIntermediateDirectories: true)
        try fm.createSymbolicLink(atPath: "\(root)/build/headers", withDestinationPath: outside)
        try fm.createSymbolicLink(atPath: "\(root)/build/alias.h", withDestinationPath: "\(outside)/alias.h")
        let mirror = try TreeMirror(scanning: tree)
        try mirror.write(to: "\(root)/build", method: .sync)
        try mirror.write(to: "\(root)/build", method: .sync)
        #expect(try fm.contentsOfDirectory(atPath: outside).isEmpty)
        #expect(Self.files(under: "\(root)/build")["headers"] == "dir")
        #expect(Self.files(under: "\(root)/build")["alias.h"] == "file")
        #expect(!Self.files(under: "\(root)/build").values.contains("link"))
    }

    /// Each refused link, alone in an otherwise good tree: the target, and the words the message must hold.
    static let refused: [(name: String, target: String, words: [String])] = [
        ("dangling.c", "missing/dangling.c", ["does not exist", "dangling"]),
        ("passwd", "/etc/passwd", ["an absolute path"]),
        ("nv-kernel.o_binary", "../../src/nvidia/_out/nv-kernel.o", ["does not exist"]),
        ("escape.c", "../../outside.c", ["outside the tree"]),
        ("loop", ".", ["contains the link itself"]),
    ]

    /// The links a build copy refuses as well: all of `refused` but the one to an existing
    /// file outside the tree, plus a link to a folder outside the tree.
    static let refusedForBuild: [(name: String, target: String, words: [String])] =
        refused.filter { $0.name != "escape.c" } + [("outside", "../../outside_src", ["a folder", "not folders"])]

    /// Refused links under both policies: a package (`.refuse`) and a build copy (`.copyFiles`).
    static let refusalCases: [(policy: TreeMirror.OutsideLinks, index: Int)] =
        refused.indices.map { (.refuse, $0) } + refusedForBuild.indices.map { (.copyFiles, $0) }

    @Test(arguments: 0..<TreeMirrorTests.refusalCases.count)
    func refusedLinkIsNamedWithItsTarget(caseIndex: Int) throws {
        let (policy, index) = Self.refusalCases[caseIndex]
        let (name, target, words) = policy == .refuse ? Self.refused[index] : Self.refusedForBuild[index]
        let (root, tree) = try Self.makeTree("mirror-refuse")
        defer { try? FileManager.default.removeItem(atPath: root) }
        try "int x;\n".write(toFile: "\(root)/outside.c", atomically: false, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: "\(root)/outside_src", withIntermediateDirectories: true)
        // In a folder of its own: through the `headers` alias the scan would meet it there first.
        try FileManager.default.createDirectory(atPath: "\(tree)/sub", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: "\(tree)/sub/\(name)", withDestinationPath: target)
        do {
            _ = try TreeMirror(scanning: tree, outsideLinks: policy)
            Issue.record("\(name) -> \(target) was accepted under \(policy)")
        } catch let error as UserError {
            #expect(error.kind == .failed)
            #expect(error.message.hasPrefix("\(tree)/sub/\(name): symbolic link to \(target)"), "\(error.message)")
            for word in words { #expect(error.message.contains(word), "\(error.message)") }
            #expect(error.message.contains("replace the link") || error.message.contains("remove the link")
                || error.message.contains("link the files"))
        }
    }

    /// A build copy takes a file that a relative link reaches outside the tree, as
    /// `make M=$PWD` in the tree would read it; a package still refuses that link.
    @Test func buildCopyTakesAFileOutsideTheTreeAsAFile() throws {
        let (root, tree) = try Self.makeTree("mirror-outside")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fm = FileManager.default
        try fm.createDirectory(atPath: "\(root)/outside_src", withIntermediateDirectories: true)
        try "int extra;\n".write(toFile: "\(root)/outside_src/extra.c", atomically: false, encoding: .utf8)
        try fm.createSymbolicLink(atPath: "\(tree)/extra.c", withDestinationPath: "../outside_src/extra.c")
        #expect(throws: UserError.self) { try TreeMirror(scanning: tree) }
        let mirror = try TreeMirror(scanning: tree, outsideLinks: .copyFiles)
        try mirror.write(to: "\(root)/copy", method: .sync)
        #expect(Self.files(under: "\(root)/copy")["extra.c"] == "file")
        #expect(try String(contentsOfFile: "\(root)/copy/extra.c", encoding: .utf8) == "int extra;\n")
    }

    /// No file of a build copy shares an inode with the tree, and a hard link an older
    /// nvbuild left in a build folder is replaced by a copy instead of being kept.
    @Test func buildSyncNeverSharesAFileWithTheTree() throws {
        let (root, tree) = try Self.makeTree("mirror-nolink")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fm = FileManager.default
        try fm.createDirectory(atPath: "\(root)/build", withIntermediateDirectories: true)
        #expect(link("\(tree)/nvbuild_plain.c", "\(root)/build/nvbuild_plain.c") == 0)
        let mirror = try TreeMirror(scanning: tree)
        try mirror.write(to: "\(root)/build", method: .sync)
        for entry in mirror.entries where entry.kind == .file {
            var source = stat(), copy = stat()
            #expect(stat(entry.source, &source) == 0 && stat("\(root)/build/\(entry.relativePath)", &copy) == 0)
            #expect(source.st_ino != copy.st_ino, "\(entry.relativePath) shares the tree's inode")
            #expect(source.st_size == copy.st_size && source.st_mtim.tv_sec == copy.st_mtim.tv_sec)
            #expect(source.st_mode & 0o777 == copy.st_mode & 0o777)
        }
        // Writing the copy leaves the tree's file as it was.
        let original = try Data(contentsOf: URL(fileURLWithPath: "\(tree)/nvbuild_plain.c"))
        let handle = try #require(FileHandle(forWritingAtPath: "\(root)/build/nvbuild_plain.c"))
        handle.seekToEndOfFile()
        handle.write(Data("/* written in the copy */\n".utf8))
        try handle.close()
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(tree)/nvbuild_plain.c")) == original)
        // A second sync keeps unchanged files and refreshes the one that changed.
        var before = stat()
        stat("\(root)/build/Kbuild", &before)
        try mirror.write(to: "\(root)/build", method: .sync)
        var after = stat()
        stat("\(root)/build/Kbuild", &after)
        #expect(before.st_ino == after.st_ino)
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(root)/build/nvbuild_plain.c")) == original)
    }

    @Test func packageWithARefusedLinkWritesNothing() async throws {
        let (root, tree) = try Self.makeTree("mirror-pkg")
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createSymbolicLink(atPath: "\(tree)/passwd", withDestinationPath: "/etc/passwd")
        let driver = try DriverTree.load(path: tree)
        let out = "\(root)/out"
        do {
            _ = try await DKMSPackager.package(
                tree: driver, spec: DKMSPackageSpec(name: "hello", version: "1", tree: driver, jobs: 1), outputRoot: out,
                tarball: "\(root)/hello.tar.gz")
            Issue.record("packaged a tree with a link to /etc/passwd")
        } catch let error as UserError {
            #expect(error.message.contains("\(tree)/passwd: symbolic link to /etc/passwd, an absolute path"))
        }
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(!FileManager.default.fileExists(atPath: "\(root)/hello.tar.gz"))
    }

    @Test func packagedTreeHoldsNoLinkAndNoBuildProduct() async throws {
        let (root, tree) = try Self.makeTree("mirror-pkg-ok")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let driver = try DriverTree.load(path: tree)
        let result = try await DKMSPackager.package(
            tree: driver, spec: DKMSPackageSpec(name: "hello", version: "1", tree: driver, jobs: 1), outputRoot: "\(root)/out",
            tarball: "\(root)/hello.tar.gz")
        let files = Self.files(under: result.directory)
        #expect(!files.values.contains("link"))
        #expect(files["alias.h"] == "file" && files["dkms.conf"] == "file")
        #expect(files.keys.allSatisfy { !$0.hasSuffix(".o") && !$0.hasSuffix(".ko") && !$0.hasPrefix("conftest") && !$0.hasPrefix(".") })
        let listing = try await Fixtures.run(["tar", "-tvzf", "\(root)/hello.tar.gz"])
        #expect(listing.succeeded)
        #expect(!listing.standardOutput.split(separator: "\n").contains { $0.hasPrefix("l") })
        #expect(listing.standardOutput.contains("dkms_source_tree/headers/x.h"))
    }

    @Test func buildWithARefusedLinkFailsBeforeAnythingIsWritten() async throws {
        let (root, tree) = try Self.makeTree("mirror-build")
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createSymbolicLink(atPath: "\(tree)/extra.c", withDestinationPath: "../outside_src/extra.c")
        let kernel = try KernelDiscovery().kernel(release: Fixtures.kernels[0])
        let result = await KbuildBuilder().build(
            BuildRequest(tree: try DriverTree.load(path: tree), kernel: kernel, buildRoot: "\(root)/build", jobs: 1))
        #expect(!result.succeeded)
        let message = try #require(result.reason?.message)
        #expect(message.hasPrefix("\(tree)/extra.c: symbolic link to ../outside_src/extra.c"), "\(message)")
        #expect(!FileManager.default.fileExists(atPath: "\(root)/build"))
    }
}
