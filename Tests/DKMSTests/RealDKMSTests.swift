import DKMS
import Foundation
import NVBuildSupport
import SourceTree
import Testing

/// Debian's real dkms on a generated package. Needs root (dkms writes /usr/src,
/// /var/lib/dkms and /lib/modules); every run uses its own package name and
/// removes what it added.
@Suite("real dkms", .serialized, .enabled(if: Fixtures.isRoot && Fixtures.hasDKMS))
struct RealDKMSTests {
    static func uniqueName(_ label: String) -> String {
        "nvbuild-\(label)-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    }

    private func cleanUp(_ name: String, _ version: String) async {
        _ = try? await Fixtures.run(["dkms", "remove", "\(name)/\(version)", "--all"])
        try? FileManager.default.removeItem(atPath: "/usr/src/\(name)-\(version)")
    }

    /// `dkms add` of the package, then `dkms build` and `dkms install` for every standard
    /// kernel, each expected to succeed (with DKMS's output as the message when not).
    private func addBuildInstall(_ directory: String, name: String, version: String,
                                 runner: ProcessRunner = ProcessRunner()) async throws {
        let add = try await runner.run(["dkms", "add", directory])
        #expect(add.succeeded, "\(add.standardOutput)\(add.standardError)")
        for kernel in Fixtures.kernels {
            let build = try await runner.run(["dkms", "build", "\(name)/\(version)", "-k", kernel])
            #expect(build.succeeded, "dkms build -k \(kernel): \(build.standardOutput)\(build.standardError)")
            let install = try await runner.run(["dkms", "install", "\(name)/\(version)", "-k", kernel])
            #expect(install.succeeded, "dkms install -k \(kernel): \(install.standardOutput)\(install.standardError)")
        }
    }

    /// The module DKMS installed for `kernel`, with whichever compression DKMS applied.
    static func installedModule(_ module: String, kernel: String) -> String? {
        ["", ".xz", ".zst", ".gz"].map { "/lib/modules/\(kernel)/updates/dkms/\(module).ko\($0)" }
            .first { FileManager.default.fileExists(atPath: $0) }
    }

    @Test func addBuildInstallForBothKernels() async throws {
        let name = Self.uniqueName("plain"), version = "1.0"
        let out = try Fixtures.temporaryDirectory("dkms-real")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let tree = try DriverTree.load(path: Fixtures.plainModule)
        let package = try await DKMSPackager.package(
            tree: tree, spec: DKMSPackageSpec(name: name, version: version, tree: tree), outputRoot: out)
        await cleanUp(name, version)
        do {
            try await addBuildInstall(package.directory, name: name, version: version)
            let status = try await Fixtures.run(["dkms", "status", name])
            for kernel in Fixtures.kernels {
                #expect(status.standardOutput.contains("\(name)/\(version), \(kernel), x86_64: installed"), "\(status.standardOutput)")
                // The installed module is the one built for that kernel.
                let installed = Self.installedModule("nvbuild_plain", kernel: kernel)
                #expect(installed != nil)
                if let installed {
                    let vermagic = try await Fixtures.run(["modinfo", "-F", "vermagic", installed])
                    #expect(vermagic.standardOutput.hasPrefix("\(kernel) "))
                }
            }
        } catch {
            await cleanUp(name, version)
            throw error
        }
        await cleanUp(name, version)
        let after = try await Fixtures.run(["dkms", "status", name])
        #expect(!after.standardOutput.contains(name))
    }

    /// The NVIDIA-shaped fixture tree: dkms.conf's MAKE runs `nvbuild probe` (nvbuild on
    /// PATH, as on a target where it is installed) and then the tree's Makefile.
    @Test func nvidiaShapedFixtureBuildsAndInstallsForBothKernels() async throws {
        let binary = try #require(Fixtures.nvbuildBinary, "build the nvbuild product first (swift build)")
        let name = Self.uniqueName("fixture"), version = "0.1.0"
        let out = try Fixtures.temporaryDirectory("dkms-fixture")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let tree = try DriverTree.load(path: Fixtures.repository + "/Tests/Fixtures/kernel-open")
        #expect(tree.requestsConftest && tree.rejectsPreemptRT)
        let package = try await DKMSPackager.package(
            tree: tree, spec: DKMSPackageSpec(name: name, version: version, tree: tree), outputRoot: out)
        let conf = try String(contentsOfFile: package.directory + "/dkms.conf", encoding: .utf8)
        #expect(conf.contains("BUILD_EXCLUSIVE_CONFIG=\"!CONFIG_PREEMPT_RT\""))
        #expect(conf.contains("nvbuild probe"))
        await cleanUp(name, version)
        let path = URL(fileURLWithPath: binary).deletingLastPathComponent().path + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let runner = ProcessRunner(environment: ProcessInfo.processInfo.environment.merging(["PATH": path]) { $1 })
        do {
            try await addBuildInstall(package.directory, name: name, version: version, runner: runner)
            for kernel in Fixtures.kernels {
                for module in ["nvfixture", "nvfixture-drm"] {
                    let installed = Self.installedModule(module, kernel: kernel)
                    #expect(installed != nil, "\(module) not installed for \(kernel)")
                    if let installed {
                        let vermagic = try await runner.run(["modinfo", "-F", "vermagic", installed])
                        #expect(vermagic.standardOutput.hasPrefix("\(kernel) "))
                    }
                }
            }
            let status = try await runner.run(["dkms", "status", name])
            for kernel in Fixtures.kernels {
                #expect(status.standardOutput.contains("\(name)/\(version), \(kernel), x86_64: installed"), "\(status.standardOutput)")
            }
        } catch {
            await cleanUp(name, version)
            throw error
        }
        await cleanUp(name, version)
    }

    /// A whole source package (the full-tree fixture, NVIDIA's layout): the package holds the
    /// core's sources, and DKMS's build runs the package's make, which builds the core and
    /// then the Kbuild tree for each kernel; the installed module carries the core's code.
    @Test func fullTreeBuildsItsCoreAndInstallsForBothKernels() async throws {
        let name = Self.uniqueName("fulltree"), version = "1.0"
        let out = try Fixtures.temporaryDirectory("dkms-fulltree")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let fullTree = try #require(try FullTree.detect(path: Fixtures.repository + "/Tests/Fixtures/full-tree"))
        let package = try await DKMSPackager.package(
            tree: fullTree.kbuildTree, spec: DKMSPackageSpec(name: name, version: version, fullTree: fullTree),
            outputRoot: out, fullTree: fullTree)
        #expect(FileManager.default.fileExists(atPath: package.directory + "/src/nvcore/nvcore.c"))
        #expect(!package.manifest.contains { $0.path.hasSuffix(".o_binary") || $0.path.contains("_out/") })
        let conf = try String(contentsOfFile: package.confPath, encoding: .utf8)
        #expect(conf.contains("BUILT_MODULE_LOCATION[0]=\"kernel-open\""), "\(conf)")
        #expect(conf.contains("mokutil --import /var/lib/dkms/mok.pub"))
        #expect(try DKMSLinter.lint(path: package.confPath).isEmpty)
        await cleanUp(name, version)
        do {
            try await addBuildInstall(package.directory, name: name, version: version)
            for kernel in Fixtures.kernels {
                let installed = Self.installedModule("nvcoreuser", kernel: kernel)
                #expect(installed != nil, "nvcoreuser not installed for \(kernel)")
                if let installed {
                    let vermagic = try await Fixtures.run(["modinfo", "-F", "vermagic", installed])
                    #expect(vermagic.standardOutput.hasPrefix("\(kernel) "))
                    // DKMS signed it with its MOK, as the package's dkms.conf says; nvbuild reads the same signer.
                    let signer = try await Fixtures.run(["modinfo", "-F", "signer", installed])
                    #expect(!signer.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "not signed: \(installed)")
                    if let binary = Fixtures.nvbuildBinary {
                        let read = try await Fixtures.run([binary, "inspect", "--field", "signer", installed])
                        #expect(read.standardOutput == signer.standardOutput)
                    }
                }
            }
            let status = try await Fixtures.run(["dkms", "status", name])
            for kernel in Fixtures.kernels {
                #expect(status.standardOutput.contains("\(name)/\(version), \(kernel), x86_64: installed"), "\(status.standardOutput)")
            }
        } catch {
            await cleanUp(name, version)
            throw error
        }
        await cleanUp(name, version)
    }

    @Test func ldtarballAcceptsTheTarball() async throws {
        let name = Self.uniqueName("tarball"), version = "2.0"
        let out = try Fixtures.temporaryDirectory("dkms-tarball")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let tree = try DriverTree.load(path: Fixtures.plainModule)
        let tarball = "\(out)/\(name)-\(version).dkms.tar.gz"
        _ = try await DKMSPackager.package(
            tree: tree, spec: DKMSPackageSpec(name: name, version: version, tree: tree), outputRoot: out, tarball: tarball)
        await cleanUp(name, version)
        let load = try await Fixtures.run(["dkms", "ldtarball", tarball])
        let status = try await Fixtures.run(["dkms", "status", name])
        await cleanUp(name, version)
        #expect(load.succeeded, "\(load.standardOutput)\(load.standardError)")
        #expect(status.standardOutput.contains("\(name)/\(version): added"), "\(status.standardOutput)")
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: PackageTests.upstream)))
    func addAcceptsThePackagedNVIDIATree() async throws {
        let name = Self.uniqueName("nvidia"), version = "595.45.04"
        let out = try Fixtures.temporaryDirectory("dkms-nvidia")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let tree = try DriverTree.load(path: PackageTests.upstream)
        let package = try await DKMSPackager.package(
            tree: tree, spec: DKMSPackageSpec(name: name, version: version, tree: tree), outputRoot: out)
        #expect(try DKMSLinter.lint(path: package.confPath).isEmpty)
        await cleanUp(name, version)
        let add = try await Fixtures.run(["dkms", "add", package.directory])
        let status = try await Fixtures.run(["dkms", "status", name])
        await cleanUp(name, version)
        #expect(add.succeeded, "\(add.standardOutput)\(add.standardError)")
        #expect(status.standardOutput.contains("\(name)/\(version): added"))
    }
}
