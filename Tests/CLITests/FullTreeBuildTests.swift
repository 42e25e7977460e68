import Foundation
import NVBuildSupport
import Testing

/// `nvbuild build` on a whole source package shaped like NVIDIA's (Tests/Fixtures/full-tree):
/// the OS-agnostic core is built once, for every kernel, into the cache; its Kbuild tree
/// alone, without the core, is refused before anything compiles.
@Suite struct FullTreeBuildTests {
    static let fullTree = CLI.repository + "/Tests/Fixtures/full-tree"

    @Test func coresAreBuiltOnceForEveryKernelAndReusedFromTheCache() async throws {
        let kernels = [try CLI.standardKernel("6.1."), try CLI.standardKernel("6.12.")]
        let root = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let arguments = ["build", "--tree", Self.fullTree, "--kernel", kernels[0], "--kernel", kernels[1],
                         "--build-dir", root + "/build", "--cache-dir", root + "/cache", "--jobs", "2"]
        let first = try CLI.run(arguments)
        #expect(first.status == 0, "\(first.stdout)\(first.stderr)")
        #expect(first.stderr.contains("cores nvcore.o: built in"), "\(first.stderr)")
        // One make of the core, whatever the number of kernels.
        let log = try String(contentsOfFile: root + "/build/cores.log", encoding: .utf8)
        #expect(log.components(separatedBy: "$ make -C ").count == 2, "\(log)")
        #expect(log.contains("OUTPUTDIR=\(root)/cache/cores/"), "\(log)")
        // The core's make wrote into the cache, not into the user's tree.
        #expect(!FileManager.default.fileExists(atPath: Self.fullTree + "/src/nvcore/_out"))
        for release in kernels {
            let module = "\(root)/build/\(release)/tree/nvcoreuser.ko"
            // The core's function is defined in the module, not left for the loader to find.
            let nm = try await ProcessRunner().run(["nm", module])
            #expect(nm.standardOutput.split(separator: "\n").contains { $0.hasSuffix(" T nvcore_checksum") }, "\(nm.standardOutput)")
            let vermagic = try await ProcessRunner().run(["/sbin/modinfo", "-F", "vermagic", module])
            #expect(vermagic.standardOutput.hasPrefix(release + " "))
        }

        let second = try CLI.run(arguments + ["--json"])
        #expect(second.status == 0, "\(second.stderr)")
        let rows = try JSONSerialization.jsonObject(with: Data(second.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(rows.count == 2)
        let cores = rows.compactMap { $0["cores"] as? [String: Any] }
        #expect(cores.count == 2)
        #expect(cores.allSatisfy { $0["reused"] as? Bool == true })
        #expect(Set(cores.compactMap { $0["key"] as? String }).count == 1)
    }

    @Test func aKbuildTreeWithoutItsCoresFailsBeforeAnyCompile() throws {
        let root = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let out = try CLI.run(["build", "--tree", Self.fullTree + "/kernel-open", "--kernel", try CLI.standardKernel("6.12."),
                               "--build-dir", root + "/build"])
        #expect(out.status == 2, "\(out.stderr)")
        let lines = out.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(out.stderr)")
        #expect(out.stderr.hasPrefix("error: \(Self.fullTree)/kernel-open/nvcoreuser/nvcore.o_binary: missing;"), "\(out.stderr)")
        // Both remedies: the full tree's root, or the prebuilt objects.
        #expect(out.stderr.contains("nvbuild build --tree \(Self.fullTree),"), "\(out.stderr)")
        #expect(out.stderr.contains("place the prebuilt _binary objects"), "\(out.stderr)")
        #expect(!FileManager.default.fileExists(atPath: root + "/build"))
    }
}
