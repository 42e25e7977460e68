import Foundation
import Kbuild
import KernelTree
import NVBuildSupport
import SourceTree
import TestSupport
import Testing

@Suite("nvbuild build through Kbuild")
struct BuildTests {
    /// vermagic of a module Debian shipped for this kernel, read by the real modinfo.
    private func shippedVermagic(_ release: String) async throws -> String {
        try InstalledKernels.requireImage(release)
        let dir = "/lib/modules/\(release)/kernel/fs"
        let enumerator = FileManager.default.enumerator(atPath: dir)
        var module: String?
        while let entry = enumerator?.nextObject() as? String {
            if entry.hasSuffix(".ko") || entry.hasSuffix(".ko.xz") {
                module = "\(dir)/\(entry)"
                break
            }
        }
        let path = try #require(module)
        return try await Fixtures.run(["modinfo", "-F", "vermagic", path]).standardOutput.trimmingCharacters(in: .newlines)
    }

    @Test(arguments: Fixtures.kernels)
    func plainTreeBuildsWithTheKernelsVermagic(release: String) async throws {
        let root = try Fixtures.temporaryDirectory("build")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let kernel = try KernelDiscovery().kernel(release: release)
        let tree = try DriverTree.load(path: Fixtures.plainModule)
        let result = await KbuildBuilder().build(BuildRequest(tree: tree, kernel: kernel, buildRoot: root, jobs: 2))
        #expect(result.succeeded, "\(result.reason?.description ?? "") \(result.failure?.errorLines ?? [])")
        let module = try #require(result.modules.first)
        #expect(module.name == "nvbuild_plain" && module.built)
        #expect(module.path == "\(root)/\(release)/tree/nvbuild_plain.ko")
        #expect(module.size == (try FileManager.default.attributesOfItem(atPath: module.path)[.size] as? NSNumber)?.intValue)
        let built = try await Fixtures.run(["modinfo", "-F", "vermagic", module.path]).standardOutput.trimmingCharacters(in: .newlines)
        #expect(module.vermagic == built)
        #expect(built == (try await shippedVermagic(release)))
        // The log is where --help says, and the source tree stayed clean.
        #expect(FileManager.default.fileExists(atPath: "\(root)/\(release)/build.log"))
        #expect(!FileManager.default.fileExists(atPath: "\(Fixtures.plainModule)/nvbuild_plain.o"))
    }

    @Test func compileErrorNamesFileLineAndIdentifier() async throws {
        let root = try Fixtures.temporaryDirectory("build-broken")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let kernel = try KernelDiscovery().kernel(release: Fixtures.kernels[0])
        let tree = try DriverTree.load(path: Fixtures.brokenModule)
        let builder = KbuildBuilder(explain: { _, _, failure in "asked about \(failure.identifiers.joined(separator: ","))" })
        let result = await builder.build(BuildRequest(tree: tree, kernel: kernel, buildRoot: root, jobs: 1))
        #expect(!result.succeeded)
        let failure = try #require(result.failure)
        #expect(failure.file == "\(Fixtures.brokenModule)/nvbuild_broken.c")
        #expect(failure.line == 7)
        #expect(failure.errorLines.first?.contains("nvbuild_missing_helper") == true)
        #expect(failure.identifiers.contains("nvbuild_missing_helper"))
        #expect(failure.explanation == "asked about \(failure.identifiers.joined(separator: ","))")
        // The reason points at the same place, so the CLI can show it as file:line.
        #expect(result.reason?.severity == .error)
        #expect(result.reason?.file == failure.file && result.reason?.line == 7)
        #expect(result.modules.allSatisfy { !$0.built })
    }

    /// A folder an interrupted build left (INCOMPLETE marker, objects a killed compiler
    /// may have half-written) is not trusted: the next build starts from a fresh copy,
    /// and a build that ran to its end leaves no marker.
    @Test func interruptedFolderIsRebuiltFromAFreshCopy() async throws {
        let root = try Fixtures.temporaryDirectory("build-incomplete")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let kernel = try KernelDiscovery().kernel(release: Fixtures.kernels[0])
        let request = BuildRequest(tree: try DriverTree.load(path: Fixtures.plainModule), kernel: kernel, buildRoot: root, jobs: 1)
        try FileManager.default.createDirectory(atPath: request.buildTree, withIntermediateDirectories: true)
        try "half-written\n".write(toFile: request.buildTree + "/nvbuild_plain.o", atomically: false, encoding: .utf8)
        try "interrupted\n".write(toFile: request.incompleteMarker, atomically: false, encoding: .utf8)
        let result = await KbuildBuilder().build(request)
        #expect(result.succeeded, "\(result.reason?.description ?? "")")
        #expect(!FileManager.default.fileExists(atPath: request.incompleteMarker))
        // The object is Kbuild's own, not the leftover.
        let object = try Data(contentsOf: URL(fileURLWithPath: request.buildTree + "/nvbuild_plain.o"))
        #expect(object.prefix(4) == Data([0x7F, 0x45, 0x4C, 0x46]))
    }

    /// A plain tree with two obj-m modules, one broken: the broken one carries its own
    /// file:line; the other's objects compiled (make -k) but Kbuild links nothing after
    /// an error in one M= build, so it is named as not linked rather than as failing.
    @Test func plainTreeNamesTheModuleWhoseObjectFailed() async throws {
        let root = try Fixtures.temporaryDirectory("build-two")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let tree = "\(root)/tree"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        try "obj-m += good.o broken.o\n".write(toFile: "\(tree)/Kbuild", atomically: false, encoding: .utf8)
        try "#include <linux/module.h>\nMODULE_LICENSE(\"GPL\");\n".write(toFile: "\(tree)/good.c", atomically: false, encoding: .utf8)
        try "#include <linux/module.h>\nMODULE_LICENSE(\"GPL\");\nstatic int b = undeclared_thing;\n"
            .write(toFile: "\(tree)/broken.c", atomically: false, encoding: .utf8)
        let kernel = try KernelDiscovery().kernel(release: Fixtures.kernels[0])
        let result = await KbuildBuilder().build(BuildRequest(tree: try DriverTree.load(path: tree), kernel: kernel, buildRoot: "\(root)/build", jobs: 2))
        #expect(!result.succeeded)
        let modules = Dictionary(uniqueKeysWithValues: result.modules.map { ($0.name, $0) })
        let broken = try #require(modules["broken"]), good = try #require(modules["good"])
        #expect(!broken.built && broken.failure?.file == "\(tree)/broken.c" && broken.failure?.line == 3)
        #expect(broken.reason?.file == "\(tree)/broken.c" && broken.reason?.line == 3)
        #expect(!good.built && good.failure == nil)
        #expect(good.reason?.message.contains("not linked") == true, "\(good.reason?.message ?? "")")
        // make -k compiled the good module's object past the error.
        #expect(FileManager.default.fileExists(atPath: "\(root)/build/\(kernel.release)/tree/good.o"))
        #expect(result.reason?.message.contains("failed to compile: broken") == true, "\(result.reason?.message ?? "")")
    }

    @Test func brokenKernelTreeFailsWithAReason() async throws {
        let root = try Fixtures.temporaryDirectory("build-badkernel")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let copy = "\(root)/headers"
        try await Fixtures.run(["cp", "-a", "/lib/modules/\(Fixtures.kernels[0])/build/", copy])
        try FileManager.default.removeItem(atPath: "\(copy)/include/generated/autoconf.h")
        let kernel = try KernelDiscovery().kernel(sourceDirectory: copy, outputDirectory: copy)
        let tree = try DriverTree.load(path: Fixtures.plainModule)
        let result = await KbuildBuilder().build(BuildRequest(tree: tree, kernel: kernel, buildRoot: "\(root)/out", jobs: 1))
        #expect(!result.succeeded)
        #expect(result.reason?.message.contains("include/generated/autoconf.h is missing") == true)
        #expect(result.reason?.remedy?.contains("apt-get install --reinstall linux-headers-") == true)
    }
}
