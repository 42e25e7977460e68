import Foundation
import NVBuildSupport
import Testing

/// `nvbuild build` on the NVIDIA-shaped fixture tree: probe first (through the
/// catalog), then the kernel's own Kbuild, for both standard kernels at once.
@Suite struct BuildCommandTests {
    @Test func fixtureTreeBuildsForBothKernelsWithMatchingVermagic() async throws {
        let kernels = [try CLI.standardKernel("6.1."), try CLI.standardKernel("6.12.")]
        let copy = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: copy) }
        try FileManager.default.copyItem(atPath: CLI.fixture, toPath: copy)
        let out = try CLI.run(["build", "--tree", copy, "--kernel", kernels[0], "--kernel", kernels[1], "--jobs", "2", "--json"])
        #expect(out.status == 0, "\(out.stderr)")
        let rows = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(rows.count == 2)
        for row in rows {
            let release = row["release"] as? String ?? ""
            #expect(kernels.contains(release))
            #expect(row["succeeded"] as? Bool == true)
            let modules = row["modules"] as? [[String: Any]] ?? []
            #expect(Set(modules.compactMap { $0["name"] as? String }) == ["nvfixture", "nvfixture-drm"])
            for module in modules {
                let path = module["path"] as? String ?? ""
                let vermagic = module["vermagic"] as? String ?? ""
                #expect(vermagic.hasPrefix(release + " "))
                // The table's vermagic is the module's own, as modinfo reads it.
                let modinfo = try await ProcessRunner().run(["/sbin/modinfo", "-F", "vermagic", path])
                #expect(modinfo.standardOutput == vermagic + "\n")
                // The build used conftest/ from the probe.
                let conftest = URL(fileURLWithPath: path).deletingLastPathComponent().path + "/conftest/functions.h"
                #expect((try? String(contentsOfFile: conftest, encoding: .utf8))?.contains("\"\(release)\"") == true)
            }
        }
    }

    /// A link that leaves the tree stops `build` and `dkms package` before anything is
    /// written, with one line naming the link, its target and the remedy.
    @Test func linkLeavingTheTreeFailsBuildAndPackage() throws {
        let root = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let copy = root + "/kernel-open"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.fixture, toPath: copy)
        // What NVIDIA's top-level make leaves in kernel-open/: a link into the full tree.
        try FileManager.default.createSymbolicLink(atPath: copy + "/nvfixture/nv-kernel.o_binary", withDestinationPath: "../../src/nvidia/_out/nv-kernel.o")
        let link = "\(copy)/nvfixture/nv-kernel.o_binary: symbolic link to ../../src/nvidia/_out/nv-kernel.o"

        let build = try CLI.run(["build", "--tree", copy, "--build-dir", root + "/build"])
        #expect(build.status == 1, "\(build.stderr)")
        #expect(build.stderr.hasPrefix("error: \(link), which does not exist"), "\(build.stderr)")
        #expect(build.stderr.split(separator: "\n").count == 1)
        #expect(!FileManager.default.fileExists(atPath: root + "/build"))

        let package = try CLI.run(["dkms", "package", "--tree", copy, "--name", "nvfixture", "--version", "1", "--output", root + "/out"])
        #expect(package.status == 1, "\(package.stderr)")
        #expect(package.stderr.contains(link), "\(package.stderr)")
        #expect(!FileManager.default.fileExists(atPath: root + "/out"))
    }

    /// The build copy never writes the user's tree: a Kbuild that appends to its own
    /// source changes only the copy, and a relative link to a sibling folder's file
    /// (which `make M=$PWD` in the tree reads) builds as it does there.
    @Test func buildNeverWritesTheTreeAndFollowsALinkToASiblingFile() throws {
        let kernel = try CLI.standardKernel("6.12.")
        let root = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let tree = root + "/tree", fm = FileManager.default
        try fm.createDirectory(atPath: tree, withIntermediateDirectories: true)
        try fm.createDirectory(atPath: root + "/outside_src", withIntermediateDirectories: true)
        try """
            obj-m += nvbuild_append.o
            nvbuild_append-y := main.o extra.o
            # A Kbuild step that writes a source in place, as some trees' generators do.
            $(shell echo '/* appended by the Kbuild */' >> $(src)/main.c)

            """.write(toFile: tree + "/Kbuild", atomically: false, encoding: .utf8)
        try """
            #include <linux/module.h>
            int nvbuild_extra(void);
            static int __init nvbuild_append_init(void) { return nvbuild_extra(); }
            module_init(nvbuild_append_init);
            MODULE_LICENSE("GPL");

            """.write(toFile: tree + "/main.c", atomically: false, encoding: .utf8)
        try "int nvbuild_extra(void);\nint nvbuild_extra(void) { return 0; }\n"
            .write(toFile: root + "/outside_src/extra.c", atomically: false, encoding: .utf8)
        try fm.createSymbolicLink(atPath: tree + "/extra.c", withDestinationPath: "../outside_src/extra.c")
        let mainBefore = try Data(contentsOf: URL(fileURLWithPath: tree + "/main.c"))
        let extraBefore = try Data(contentsOf: URL(fileURLWithPath: root + "/outside_src/extra.c"))

        let out = try CLI.run(["build", "--tree", tree, "--kernel", kernel, "--build-dir", root + "/build", "--jobs", "2", "--json"])
        #expect(out.status == 0, "\(out.stdout)\n\(out.stderr)")
        let copy = "\(root)/build/\(kernel)/tree"
        #expect(fm.fileExists(atPath: copy + "/nvbuild_append.ko"))
        // The Kbuild step ran, in the copy only.
        #expect(((try? String(contentsOfFile: copy + "/main.c", encoding: .utf8)) ?? "").contains("appended by the Kbuild"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: tree + "/main.c")) == mainBefore)
        #expect(try Data(contentsOf: URL(fileURLWithPath: root + "/outside_src/extra.c")) == extraBefore)
        // The link's target was compiled as a file of the copy, and the tree got no build product.
        var st = stat()
        #expect(lstat(copy + "/extra.c", &st) == 0 && st.st_mode & S_IFMT == S_IFREG)
        #expect(fm.fileExists(atPath: copy + "/extra.o"))
        #expect(try fm.contentsOfDirectory(atPath: tree).sorted() == ["Kbuild", "extra.c", "main.c"])
        #expect(try fm.contentsOfDirectory(atPath: root + "/outside_src") == ["extra.c"])
    }

    /// An absolute link stops `build` before any compile, naming the link and its target.
    @Test func absoluteLinkStopsTheBuildBeforeAnyCompile() throws {
        let root = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let copy = root + "/tree"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.fixture, toPath: copy)
        try FileManager.default.createSymbolicLink(atPath: copy + "/nvfixture/passwd.h", withDestinationPath: "/etc/passwd")
        let build = try CLI.run(["build", "--tree", copy, "--build-dir", root + "/build"])
        #expect(build.status == 1, "\(build.stderr)")
        #expect(build.stderr.hasPrefix("error: \(copy)/nvfixture/passwd.h: symbolic link to /etc/passwd, an absolute path"), "\(build.stderr)")
        #expect(!FileManager.default.fileExists(atPath: root + "/build"))
    }

    /// One module of two with a compile error: the table and JSON name that module with
    /// the file:line of its first error, and the other module is built (make -k compiles
    /// past the error; a second make links the modules whose objects all compiled).
    @Test func failedModuleIsNamedAndTheOtherIsBuilt() throws {
        let kernel = try CLI.standardKernel("6.12.")
        let root = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let tree = root + "/tree"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.fixture, toPath: tree)
        let source = tree + "/nvfixture-drm/nvfixture-drm-main.c"
        var lines = try String(contentsOfFile: source, encoding: .utf8).components(separatedBy: "\n")
        let exitLine = try #require(lines.firstIndex { $0.hasPrefix("static void __exit") })
        lines.insert("static int nvfixture_broken = nvfixture_undeclared_value;", at: exitLine)
        try lines.joined(separator: "\n").write(toFile: source, atomically: false, encoding: .utf8)
        let errorLine = exitLine + 1

        let out = try CLI.run(["build", "--tree", tree, "--kernel", kernel, "--build-dir", root + "/build", "--jobs", "2", "--json"])
        #expect(out.status == 1, "\(out.stderr)")
        let rows = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]] ?? []
        let row = try #require(rows.first)
        #expect(row["succeeded"] as? Bool == false)
        let modules = Dictionary(uniqueKeysWithValues: ((row["modules"] as? [[String: Any]]) ?? []).map { ($0["name"] as? String ?? "", $0) })
        let good = try #require(modules["nvfixture"]), bad = try #require(modules["nvfixture-drm"])
        #expect(good["built"] as? Bool == true)
        #expect((good["vermagic"] as? String)?.hasPrefix(kernel + " ") == true)
        #expect(FileManager.default.fileExists(atPath: good["path"] as? String ?? ""))
        #expect(bad["built"] as? Bool == false)
        let failure = try #require(bad["failure"] as? [String: Any])
        #expect(failure["file"] as? String == source)
        #expect(failure["line"] as? Int == errorLine)
        #expect((failure["errorLines"] as? [String])?.first?.contains("nvfixture_undeclared_value") == true)
        let reason = ((row["reason"] as? [String: Any])?["message"] as? String) ?? ""
        #expect(reason.contains("failed to compile: nvfixture-drm") && reason.contains("built: nvfixture"), "\(reason)")
        #expect(reason.contains("\(source):\(errorLine)"), "\(reason)")

        // The table says the same.
        let table = try CLI.run(["build", "--tree", tree, "--kernel", kernel, "--build-dir", root + "/build", "--jobs", "2"])
        #expect(table.status == 1)
        let tableLines = table.stdout.split(separator: "\n").map(String.init)
        #expect(tableLines.contains { $0.contains(" nvfixture ") && $0.contains(" ok ") }, "\(table.stdout)")
        #expect(tableLines.contains { $0.contains("nvfixture-drm") && $0.contains("failed")
            && $0.contains("error at nvfixture-drm/nvfixture-drm-main.c:\(errorLine)") }, "\(table.stdout)")
    }

    /// The probe before make honours build's --catalog and --cache-dir as `nvbuild probe`
    /// does: an empty catalog leaves every test to the fixture's conftest.sh, which
    /// knows none of them, so the kernel's row fails naming the probe.
    @Test func buildProbesWithTheNamedCatalogAndCache() throws {
        let kernel = try CLI.standardKernel("6.12.")
        let scratch = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        try FileManager.default.createDirectory(atPath: scratch + "/catalog", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.fixture, toPath: scratch + "/tree")
        let empty = try CLI.run(["build", "--tree", scratch + "/tree", "--kernel", kernel, "--catalog", scratch + "/catalog",
                                 "--build-dir", scratch + "/build", "--no-cache"])
        #expect(empty.status == 1)
        #expect(empty.stderr.contains("probe failed") && empty.stderr.contains("nvbuild's catalog lacks them"), "\(empty.stderr)")
        let cached = try CLI.run(["build", "--tree", scratch + "/tree", "--kernel", kernel, "--cache-dir", scratch + "/cache",
                                  "--build-dir", scratch + "/build"])
        #expect(cached.status == 0, "\(cached.stderr)")
        let entries = (try? FileManager.default.subpathsOfDirectory(atPath: scratch + "/cache")) ?? []
        #expect(!entries.isEmpty, "build did not use --cache-dir")
    }

    /// `--kernel all` on a tree whose sanity checks refuse PREEMPT_RT: the -rt kernel is a
    /// skipped row with the reason and the run succeeds; named explicitly it still fails.
    @Test func allSkipsKernelsTheTreeRefuses() throws {
        let rt = try #require(try CLI.kernels().first { $0.contains("-rt-") }, "scripts/setup installs the 6.1 -rt headers")
        let scratch = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        try FileManager.default.copyItem(atPath: CLI.fixture, toPath: scratch + "/tree")
        let all = try CLI.run(["build", "--tree", scratch + "/tree", "--kernel", "all", "--json", "--build-dir", scratch + "/build"])
        #expect(all.status == 0, "\(all.stderr)")
        let rows = try JSONSerialization.jsonObject(with: Data(all.stdout.utf8)) as? [[String: Any]] ?? []
        let rtRow = try #require(rows.first { $0["release"] as? String == rt })
        #expect(rtRow["skipped"] as? Bool == true)
        #expect(((rtRow["reason"] as? [String: Any])?["message"] as? String)?.contains("PREEMPT_RT") == true)
        for row in rows where row["release"] as? String != rt && !((row["release"] as? String) ?? "").contains("-rt-") {
            #expect(row["succeeded"] as? Bool == true, "\(row["release"] ?? "?") did not build")
        }
        let named = try CLI.run(["build", "--tree", scratch + "/tree", "--kernel", rt, "--build-dir", scratch + "/build"])
        #expect(named.status == 1)
        #expect(named.stdout.contains("PREEMPT_RT") || named.stderr.contains("PREEMPT_RT"))
    }
}
