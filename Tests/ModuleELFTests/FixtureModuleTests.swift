import Foundation
import TestSupport
import ModuleELF
import NVBuildSupport
import Testing

/// The modules built from the fixture tree (Tests/Fixtures/kernel-open, NVIDIA-shaped)
/// against each installed kernel, read by `ModuleFile` and by `nvbuild inspect`, compared
/// with the real modinfo, `modinfo -F` and nm. The tree is probed and built in a scratch
/// copy with the built `nvbuild` binary and the kernel's own Kbuild, as a packager would.
@Suite struct FixtureModuleTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/kernel-open").path
    static let fixtureModules = ["nvfixture.ko", "nvfixture-drm.ko"]

    /// The `nvbuild` product of this build.
    static var nvbuild: String? { BuiltProducts.nvbuild }

    struct Result {
        var status: Int32
        var stdout: Data
        var stderr: String
    }

    static func run(_ executable: String, _ arguments: [String], in directory: String? = nil) async throws -> Result {
        // Standard output goes through a file so it is compared byte for byte, not as decoded text.
        let outputFile = NSTemporaryDirectory() + "fixture-run-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: outputFile) }
        var environment = ProcessInfo.processInfo.environment
        environment["NO_COLOR"] = "1"
        environment.removeValue(forKey: "CC")
        let output = try await ProcessRunner(environment: environment)
            .run([executable] + arguments, workingDirectory: directory, standardOutputPath: outputFile)
        let data = FileManager.default.contents(atPath: outputFile) ?? Data()
        return Result(status: output.exitStatus, stdout: data, stderr: output.standardError)
    }

    /// Probes and builds a copy of the fixture tree for `kernel`; returns the module paths.
    static func buildFixture(for kernel: InstalledKernel, in scratch: ScratchDirectory) async throws -> [String] {
        let nvbuild = try #require(nvbuild, "the nvbuild binary is not built next to the tests; run swift build")
        let tree = scratch.path + "/kernel-open"
        try FileManager.default.copyItem(atPath: fixture, toPath: tree)
        // The compiler the kernel was built with, as nvbuild reads it from CONFIG_CC_VERSION_TEXT.
        let kernels = try await run(nvbuild, ["kernels", "--json"])
        let list = try JSONSerialization.jsonObject(with: kernels.stdout) as? [[String: Any]] ?? []
        let compiler = try #require(
            list.first { $0["release"] as? String == kernel.release }?["compiler"] as? String,
            "nvbuild kernels does not know the compiler of \(kernel)")
        let probe = try await run(nvbuild, ["probe", "--quiet", "--tree", tree, "--kernel", kernel.release])
        try #require(probe.status == 0, "nvbuild probe on \(kernel): \(probe.stderr)")
        let make = try await run("/usr/bin/make", ["-C", "/lib/modules/\(kernel.release)/build", "M=\(tree)", "CC=\(compiler)", "-j2", "modules"])
        try #require(make.status == 0, "make modules for \(kernel) with \(compiler): \(make.stderr.suffix(2000))")
        let modules = fixtureModules.map { tree + "/" + $0 }
        for module in modules { try #require(FileManager.default.fileExists(atPath: module), "\(module) was not built") }
        return modules
    }

    private func nm(_ arguments: [String]) async throws -> [String] {
        String(decoding: try await runTool(["nm"] + arguments), as: UTF8.self).split(separator: "\n").compactMap { line in
            line.split(separator: " ", omittingEmptySubsequences: true).last.map(String.init)
        }
    }

    @Test(arguments: InstalledKernel.all)
    func fixtureModulesMatchModinfoAndNm(kernel: InstalledKernel) async throws {
        let scratch = try ScratchDirectory()
        let modules = try await Self.buildFixture(for: kernel, in: scratch)
        let nvbuild = try #require(Self.nvbuild)
        let symvers = try readSymvers(kernel.symversPath)
        // Kbuild's Module.symvers for the tree (the fixture's exports, if any).
        let treeSymvers = (try? readSymvers(scratch.path + "/kernel-open/Module.symvers")) ?? [:]

        // Whole output: the library's rendering and `nvbuild inspect`, both equal to modinfo.
        let expected = try await runTool(["modinfo"] + modules)
        #expect(!expected.isEmpty)
        var rendered: [UInt8] = []
        for path in modules {
            ModinfoFormatter.render(try ModuleFile.read(path: path), filename: path, into: &rendered)
        }
        #expect(rendered == Array(expected), "ModuleFile vs modinfo on \(kernel)")
        let inspect = try await Self.run(nvbuild, ["inspect"] + modules)
        #expect(inspect.status == 0, "\(inspect.stderr)")
        #expect(inspect.stdout == expected, "nvbuild inspect vs modinfo on \(kernel)")

        for field in ["vermagic", "depends", "license", "name", "srcversion"] {
            let reference = try await runTool(["modinfo", "-F", field] + modules)
            var values: [UInt8] = []
            for path in modules {
                ModinfoFormatter.renderField(field, module: try ModuleFile.read(path: path), filename: path, into: &values)
            }
            #expect(values == Array(reference), "ModuleFile vs modinfo -F \(field) on \(kernel)")
            let cli = try await Self.run(nvbuild, ["inspect", "--field", field] + modules)
            #expect(cli.status == 0 && cli.stdout == reference, "nvbuild inspect --field \(field) vs modinfo -F on \(kernel)")
        }

        for path in modules {
            let module = try ModuleFile.read(path: path)
            // What the fixture is: built here, for this kernel.
            #expect(module.values("vermagic").first?.hasPrefix(kernel.release + " ") == true, "\(path)")
            #expect(module.signature == nil, "\(path) was never signed")
            #expect(try await nm(["-u", path]).sorted() == module.undefinedSymbols, "undefined symbols of \(path)")
            let exported = try await nm([path]).filter { $0.hasPrefix("__ksymtab_") }.map { String($0.dropFirst("__ksymtab_".count)) }.sorted()
            #expect(module.exports.map(\.symbol) == exported, "exports of \(path)")
            // Kbuild's Module.symvers for the tree says the same about each export.
            for export in module.exports {
                let entry = try #require(treeSymvers[export.symbol], "\(export.symbol) missing from the tree's Module.symvers")
                #expect(export.isGPLOnly == (entry.type == "EXPORT_SYMBOL_GPL"), "\(export.symbol)")
                #expect(export.namespace == entry.namespace, "\(export.symbol)")
                #expect(UInt64(export.crc) == entry.crc, "\(export.symbol) CRC")
            }
            // __versions records the kernel's CRCs for what it imports from vmlinux.
            var vmlinuxImports = 0
            for version in module.versions {
                guard let entry = symvers[version.name] ?? treeSymvers[version.name] else {
                    Issue.record("\(path): \(version.name) is in no Module.symvers")
                    continue
                }
                #expect(version.crc == entry.crc, "\(path): CRC of \(version.name)")
                if entry.module == "vmlinux" { vmlinuxImports += 1 }
            }
            #expect(vmlinuxImports > 0, "\(path) imports nothing from vmlinux")
        }
    }
}
