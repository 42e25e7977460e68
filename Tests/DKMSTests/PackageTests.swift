import NVBuildSupport
import DKMS
import Foundation
import SourceTree
import Testing

@Suite("dkms package")
struct PackageTests {
    @Test func bundledTemplateIsTheTemplatesFile() throws {
        // Templates/ at the top is a link to the resource folder, so the documented path holds.
        let onDisk = try String(contentsOfFile: "\(Fixtures.repository)/Templates/dkms.conf.mustache", encoding: .utf8)
        #expect(DKMSPackager.bundledTemplate == onDisk)
        #expect(onDisk.contains("BUILT_MODULE_NAME[{{index}}]"))
    }

    @Test func plainTreeConf() throws {
        let tree = try DriverTree.load(path: Fixtures.plainModule)
        let text = try DKMSPackager.renderConf(DKMSPackageSpec(name: "hello", version: "1.0", tree: tree))
        let conf = DKMSConf.parse(text)
        #expect(conf.value("PACKAGE_NAME") == "hello")
        #expect(conf.value("PACKAGE_VERSION") == "1.0")
        #expect(conf.array("BUILT_MODULE_NAME") == [0: "nvbuild_plain"])
        #expect(conf.array("DEST_MODULE_LOCATION") == [0: "/updates/dkms"])
        // The job count is the installing machine's (DKMS's -j, else its CPU count), not the packager's.
        #expect(conf.value("MAKE")?.hasPrefix("'make' -j${parallel_jobs} -C ${kernel_source_dir} M=") == true)
        let fixed = DKMSConf.parse(try DKMSPackager.renderConf(DKMSPackageSpec(name: "hello", version: "1.0", tree: tree, jobs: 3)))
        #expect(fixed.value("MAKE")?.hasPrefix("'make' -j3 -C ${kernel_source_dir} M=") == true)
        #expect(conf.value("AUTOINSTALL") == "yes")
        #expect(conf.value("BUILD_EXCLUSIVE_CONFIG") == nil)
        #expect(DKMSLinter.lint(conf).isEmpty)
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: PackageTests.upstream)))
    func nvidiaTreeConfNamesAllFiveModules() throws {
        let tree = try DriverTree.load(path: Self.upstream)
        #expect(tree.style == .nvidia)
        #expect(tree.moduleNames == ["nvidia", "nvidia-uvm", "nvidia-modeset", "nvidia-drm", "nvidia-peermem"])
        #expect(tree.requestsConftest && tree.rejectsPreemptRT)
        let conf = DKMSConf.parse(try DKMSPackager.renderConf(DKMSPackageSpec(name: "nvidia", version: "595.45.04", tree: tree, jobs: 4)))
        #expect(conf.array("BUILT_MODULE_NAME").values.sorted() == tree.moduleNames.sorted())
        #expect(conf.value("BUILD_EXCLUSIVE_CONFIG") == "!CONFIG_PREEMPT_RT")
        #expect(conf.value("MAKE")?.contains("'make' -j4 KERNEL_UNAME=${kernelver} modules") == true)
        #expect(conf.value("MAKE")?.contains("nvbuild probe") == true)
        #expect(DKMSLinter.lint(conf).isEmpty)
    }
    /// An NVIDIA kernel-open/ tree of 595.45.04 named by NVBUILD_UPSTREAM_KERNEL_OPEN (kept outside
    /// the repository; the test is skipped without it).
    static let upstream = ProcessInfo.processInfo.environment["NVBUILD_UPSTREAM_KERNEL_OPEN"] ?? "/nonexistent"

    @Test func badNameIsRefusedAndNothingIsWritten() async throws {
        let out = try Fixtures.temporaryDirectory("pkg-bad")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let tree = try DriverTree.load(path: Fixtures.plainModule)
        await #expect(throws: (any Error).self) {
            _ = try await DKMSPackager.package(tree: tree, spec: DKMSPackageSpec(name: "a b$(x)", version: "1", tree: tree, jobs: 1), outputRoot: out)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).isEmpty)
    }

    @Test func templateThatRendersAHostileConfIsRefused() async throws {
        let out = try Fixtures.temporaryDirectory("pkg-hostile")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let tree = try DriverTree.load(path: Fixtures.plainModule)
        let template = "PACKAGE_NAME=\"{{name}}\"\nPACKAGE_VERSION=\"$(date +%s)\"\nBUILT_MODULE_NAME[0]=\"m\"\nDEST_MODULE_LOCATION[0]=\"/updates/dkms\"\n"
        await #expect(throws: (any Error).self) {
            _ = try await DKMSPackager.package(tree: tree, spec: DKMSPackageSpec(name: "p", version: "1", tree: tree, jobs: 1), outputRoot: out, template: template)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).isEmpty)
    }

    @Test func packagedTreeAndTarballLayout() async throws {
        let out = try Fixtures.temporaryDirectory("pkg-layout")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let tree = try DriverTree.load(path: Fixtures.plainModule)
        let result = try await DKMSPackager.package(
            tree: tree, spec: DKMSPackageSpec(name: "hello", version: "2.0", tree: tree, jobs: 2), outputRoot: out,
            tarball: "\(out)/hello-2.0.dkms.tar.gz")
        #expect(result.directory == "\(out)/hello-2.0")
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: result.directory)) == ["Kbuild", "Makefile", "nvbuild_plain.c", "dkms.conf"])
        let listing = try await Fixtures.run(["tar", "-tzf", "\(out)/hello-2.0.dkms.tar.gz"])
        let entries = Set(listing.standardOutput.split(separator: "\n").map(String.init))
        #expect(entries.isSuperset(of: ["dkms_main_tree/", "dkms_source_tree/dkms.conf", "dkms_source_tree/nvbuild_plain.c", "dkms_source_tree/Kbuild"]))
    }

    /// What a checkout and an earlier build leave in a tree (VCS files, objects, modules,
    /// Kbuild's command files, conftest/ output) is not shipped, and the manifest lists
    /// exactly the package's files with the digests sha256sum computes.
    @Test func packageLeavesOutVCSAndBuildFilesAndListsItsManifest() async throws {
        let root = try Fixtures.temporaryDirectory("pkg-manifest")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fm = FileManager.default
        let treePath = "\(root)/tree"
        try fm.copyItem(atPath: Fixtures.plainModule, toPath: treePath)
        for (name, text) in [(".gitignore", "*.o\n"), (".gitattributes", "* text\n"), ("nvbuild_plain.o", "obj"), ("nvbuild_plain.ko", "ko"),
                             (".nvbuild_plain.o.cmd", "cmd"), ("nvbuild_plain.mod.c", "c"), ("modules.order", "m"), ("Module.symvers", "s")] {
            try Data(text.utf8).write(to: URL(fileURLWithPath: "\(treePath)/\(name)"))
        }
        try fm.createDirectory(atPath: "\(treePath)/.git/objects", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(treePath)/conftest", withIntermediateDirectories: true)
        try Data("#undef X\n".utf8).write(to: URL(fileURLWithPath: "\(treePath)/conftest/functions.h"))
        let tree = try DriverTree.load(path: treePath)
        let result = try await DKMSPackager.package(tree: tree, spec: DKMSPackageSpec(name: "hello", version: "1.0", tree: tree), outputRoot: "\(root)/out")
        let shipped = try fm.subpathsOfDirectory(atPath: result.directory).sorted()
        #expect(shipped == ["Kbuild", "Makefile", "dkms.conf", "nvbuild_plain.c"])
        #expect(result.manifest.map(\.path) == shipped)
        let sums = try await Fixtures.run(["sha256sum"] + shipped.map { "\(result.directory)/\($0)" }).standardOutput
        let expected = sums.split(separator: "\n").map { String($0.prefix(64)) }
        #expect(result.manifest.map(\.sha256) == expected)
        for file in result.manifest {
            let attributes = try fm.attributesOfItem(atPath: "\(result.directory)/\(file.path)")
            #expect((attributes[.size] as? NSNumber)?.intValue == file.size)
            #expect((attributes[.posixPermissions] as? NSNumber).map { String($0.intValue, radix: 8) } == file.mode)
        }
    }

    /// NVIDIA's top-level make leaves kernel-open/nvidia/nv-kernel.o_binary as a link into
    /// src/nvidia/_out: the Kbuild links that core into the module, so the package carries
    /// it as a file copied from the link's target; a dangling or missing core is refused.
    @Test func binaryCoreLinksAreCopiedFromTheirTarget() async throws {
        let root = try Fixtures.temporaryDirectory("pkg-core")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fm = FileManager.default
        let treePath = "\(root)/kernel-open"
        try fm.copyItem(atPath: "\(Fixtures.root)/kernel-open", toPath: treePath)
        let fragment = "\(treePath)/nvfixture/nvfixture.Kbuild"
        let kbuild = try String(contentsOfFile: fragment, encoding: .utf8)
        try (kbuild + "\nNVFIXTURE_BINARY_OBJECT := $(src)/nvfixture/nv-kernel.o_binary\n").write(toFile: fragment, atomically: true, encoding: .utf8)
        try fm.createDirectory(atPath: "\(root)/src/nvidia/_out", withIntermediateDirectories: true)
        let core = Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try core.write(to: URL(fileURLWithPath: "\(root)/src/nvidia/_out/nv-kernel.o"))
        try fm.createSymbolicLink(atPath: "\(treePath)/nvfixture/nv-kernel.o_binary", withDestinationPath: "../../src/nvidia/_out/nv-kernel.o")

        let tree = try DriverTree.load(path: treePath)
        #expect(tree.binaryCores == ["nvfixture/nv-kernel.o_binary"])
        let spec = DKMSPackageSpec(name: "nvfixture", version: "1.0", tree: tree)
        let result = try await DKMSPackager.package(tree: tree, spec: spec, outputRoot: "\(root)/out")
        let packaged = "\(result.directory)/nvfixture/nv-kernel.o_binary"
        #expect((try fm.attributesOfItem(atPath: packaged)[.type] as? FileAttributeType) == .typeRegular)
        #expect(fm.contents(atPath: packaged) == core)
        let links = try await Fixtures.run(["find", result.directory, "-type", "l"])
        #expect(links.standardOutput.isEmpty, "links in the package: \(links.standardOutput)")
        #expect(result.manifest.contains { $0.path == "nvfixture/nv-kernel.o_binary" && $0.size == core.count })

        // The full tree was not built: the link dangles.
        try fm.removeItem(atPath: "\(root)/src/nvidia/_out/nv-kernel.o")
        do {
            _ = try await DKMSPackager.package(tree: tree, spec: spec, outputRoot: "\(root)/out2")
            Issue.record("a package was written with a dangling binary core")
        } catch let error as UserError {
            #expect(error.kind == .failed)
            #expect(error.message.hasPrefix("\(treePath)/nvfixture/nv-kernel.o_binary: symbolic link to ../../src/nvidia/_out/nv-kernel.o, which does not exist"), "\(error.message)")
            #expect(error.message.contains("full tree"))
        }
        // No core at all.
        try fm.removeItem(atPath: "\(treePath)/nvfixture/nv-kernel.o_binary")
        do {
            _ = try await DKMSPackager.package(tree: tree, spec: spec, outputRoot: "\(root)/out3")
            Issue.record("a package was written without its binary core")
        } catch let error as UserError {
            #expect(error.kind == .failed)
            #expect(error.message.hasPrefix("\(treePath)/nvfixture/nv-kernel.o_binary: missing"), "\(error.message)")
        }
        #expect(!fm.fileExists(atPath: "\(root)/out2/nvfixture-1.0") && !fm.fileExists(atPath: "\(root)/out3/nvfixture-1.0"))
    }

    /// With SOURCE_DATE_EPOCH two packagings give the same bytes, though the second runs
    /// from a copy whose files have other mtimes and modes (as
    /// another machine's checkout would): the tree (names, modes, mtimes, contents) and
    /// each tarball format are identical. (umask is process-wide, so it is not varied here
    /// while other tests run; the normalised modes cover it.)
    @Test func packagesWithSourceDateEpochAreReproducible() async throws {
        let root = try Fixtures.temporaryDirectory("repro")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fm = FileManager.default
        try fm.copyItem(atPath: "\(Fixtures.root)/kernel-open", toPath: "\(root)/first")
        try fm.copyItem(atPath: "\(Fixtures.root)/kernel-open", toPath: "\(root)/second")
        let later = Date(timeIntervalSinceNow: 3600)
        for file in try fm.subpathsOfDirectory(atPath: "\(root)/second") {
            try fm.setAttributes([.modificationDate: later], ofItemAtPath: "\(root)/second/\(file)")
        }
        try fm.setAttributes([.posixPermissions: 0o664], ofItemAtPath: "\(root)/second/Makefile")

        func package(_ name: String) async throws -> DKMSPackager.Output {
            let tree = try DriverTree.load(path: "\(root)/\(name)")
            var last: DKMSPackager.Output?
            for suffix in ["tar.gz", "tar.xz", "tar.zst"] {
                last = try await DKMSPackager.package(
                    tree: tree, spec: DKMSPackageSpec(name: "fixture", version: "1.0", tree: tree), outputRoot: "\(root)/out-\(name)",
                    tarball: "\(root)/out-\(name)/fixture.\(suffix)", generator: "test", sourceDateEpoch: 1_700_000_000)
            }
            return try #require(last)
        }
        let first = try await package("first")
        let second = try await package("second")
        for suffix in ["tar.gz", "tar.xz", "tar.zst"] {
            let a = try Data(contentsOf: URL(fileURLWithPath: "\(root)/out-first/fixture.\(suffix)"))
            let b = try Data(contentsOf: URL(fileURLWithPath: "\(root)/out-second/fixture.\(suffix)"))
            #expect(a == b, "fixture.\(suffix) differs between two packagings")
        }
        func listing(_ directory: String) throws -> [String] {
            try ([""] + fm.subpathsOfDirectory(atPath: directory).sorted()).map { relative in
                let path = directory + (relative.isEmpty ? "" : "/" + relative)
                let attributes = try fm.attributesOfItem(atPath: path)
                let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
                let mtime = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? -1
                let content = fm.contents(atPath: path).map { $0.count } ?? -1
                return "\(relative) \(String(mode, radix: 8)) \(mtime) \(content)"
            }
        }
        #expect(try listing(first.directory) == listing(second.directory))
        #expect(try listing(first.directory).allSatisfy { $0.contains(" 1700000000.0 ") })
        let tarList = try await Fixtures.run(["tar", "-tvzf", "\(root)/out-first/fixture.tar.gz"]).standardOutput
        #expect(tarList.split(separator: "\n").allSatisfy { $0.contains(" 0/0 ") })
    }
}
