import Foundation
import NVBuildSupport
import TestSupport
import Testing

/// Runs the built `nvbuild` binary as a user would.
enum CLI {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let fixture = repository + "/Tests/Fixtures/kernel-open"

    /// NVBUILD_TEST_BINARY names another build to test (scripts/fuzz runs a copy, so a
    /// rebuild during a long campaign does not change the binary under test).
    static var binary: String {
        ProcessInfo.processInfo.environment["NVBUILD_TEST_BINARY"] ?? BuiltProducts.nvbuild ?? repository + "/.build/debug/nvbuild"
    }

    /// Builds Tests/Fixtures/plain-module for `release` with the kernel's own Kbuild in
    /// `directory` (created); returns the path of nvbuild_plain.ko.
    static func buildPlainModule(release: String, in directory: String) async throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for file in ["Kbuild", "nvbuild_plain.c"] {
            try FileManager.default.copyItem(atPath: repository + "/Tests/Fixtures/plain-module/" + file, toPath: directory + "/" + file)
        }
        let make = try await ProcessRunner().run(["make", "-C", "/lib/modules/\(release)/build", "M=\(directory)", "modules"])
        try #require(make.succeeded, "building the plain module for \(release): \(make.standardError)")
        return directory + "/nvbuild_plain.ko"
    }

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["NO_COLOR"] = "1"
        for k in ["IGNORE_PREEMPT_RT_PRESENCE", "CC", "DISTCC_HOSTS"] { env.removeValue(forKey: k) }
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Output(status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    static func kernels() throws -> [String] {
        let out = try run(["kernels", "--json"])
        let list = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]] ?? []
        return list.compactMap { $0["release"] as? String }
    }

    /// The standard kernel of a series that scripts/setup installed (the one every test target uses).
    static func standardKernel(_ series: String) throws -> String {
        try #require(InstalledKernels.standard.first { $0.hasPrefix(series) }, "no standard \(series) kernel is installed: run scripts/setup")
    }

    static func temporaryDirectory() -> String {
        FileManager.default.temporaryDirectory.path + "/nvbuild-cli-\(UUID().uuidString)"
    }
}

@Suite struct CommandLineConventionTests {
    @Test func versionAndHelp() throws {
        let version = try CLI.run(["--version"])
        #expect(version.status == 0)
        #expect(version.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0.1.0")
        let help = try CLI.run(["probe", "explain", "--help"])
        #expect(help.status == 0)
        #expect(help.stdout.contains("Example: nvbuild probe explain"))
    }

    @Test func usageErrorsExitTwo() throws {
        let out = try CLI.run(["kernels", "--no-such-option"])
        #expect(out.status == 2)
        #expect(out.stderr.contains("--no-such-option"))
        let missing = try CLI.run(["probe", "explain"])
        #expect(missing.status == 2)
    }

    @Test func completionScript() throws {
        let out = try CLI.run(["--generate-completion-script", "bash"])
        #expect(out.status == 0)
        #expect(out.stdout.contains("nvbuild"))
        #expect(out.stdout.contains("probe"))
    }

    @Test func kernelsListsBothDebianSeries() throws {
        let releases = try CLI.kernels()
        #expect(releases.contains { $0.hasPrefix("6.1.") })
        #expect(releases.contains { $0.hasPrefix("6.12.") })
    }

    /// Each kernel says whether its image is installed beside the headers: setup installs
    /// images for the standard kernels and only headers for the -rt flavour.
    @Test func kernelsSayWhetherTheImageIsInstalled() throws {
        let out = try CLI.run(["kernels", "--json"])
        #expect(out.status == 0)
        let rows = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(!rows.isEmpty)
        for row in rows {
            let release = try #require(row["release"] as? String)
            let image = try #require(row["image"] as? [String: Any], "no image facts for \(release)")
            #expect(image["hasModules"] as? Bool == FileManager.default.fileExists(atPath: "/lib/modules/\(release)/modules.dep"))
            #expect(image["hasKernelImage"] as? Bool == FileManager.default.fileExists(atPath: "/boot/vmlinuz-\(release)"))
        }
        for release in InstalledKernels.standard {
            #expect(InstalledKernels.imageProblem(release) == nil, "\(InstalledKernels.imageProblem(release) ?? "")")
        }
        let text = try CLI.run(["kernels"])
        for row in rows where (row["image"] as? [String: Any])?["hasModules"] as? Bool == false {
            let release = row["release"] as! String
            #expect(text.stdout.contains("image:    headers only (no modules"), "\(release) is not reported as headers only")
            // And a test that needs its modules says why, naming the package to install.
            #expect(throws: InstalledKernels.MissingImage.self) { try InstalledKernels.requireImage(release) }
            #expect(InstalledKernels.imageProblem(release)?.contains("apt-get install linux-image-\(release)") == true)
        }
    }
}

@Suite struct ProbeCommandTests {
    @Test func unreadableTreeFailsCleanlyAndWritesNothing() throws {
        let outDir = CLI.temporaryDirectory()
        let out = try CLI.run(["probe", "--tree", "/nonexistent/kernel-open", "--output", outDir])
        #expect(out.status == 2)
        #expect(out.stderr.contains("/nonexistent/kernel-open"))
        #expect(out.stderr.split(separator: "\n").count == 1)
        #expect(!FileManager.default.fileExists(atPath: outDir))
    }

    @Test func missingHeadersFailCleanly() throws {
        let outDir = CLI.temporaryDirectory()
        let out = try CLI.run(["probe", "--tree", CLI.fixture, "--kernel", "6.99.0-1-amd64", "--output", outDir])
        #expect(out.status == 2)
        #expect(out.stderr.contains("apt-get install linux-headers-6.99.0-1-amd64"))
        #expect(!FileManager.default.fileExists(atPath: outDir))
    }

    @Test func missingCompilerFailsCleanly() throws {
        let kernel = try CLI.standardKernel("6.12.")
        let outDir = CLI.temporaryDirectory()
        let out = try CLI.run(["probe", "--tree", CLI.fixture, "--kernel", kernel, "--cc", "gcc-404", "--output", outDir])
        #expect(out.status == 2)
        #expect(out.stderr.contains("gcc-404"))
        #expect(!FileManager.default.fileExists(atPath: outDir))
    }

    @Test func preemptRTHeadersFailWithTheReason() throws {
        guard let rt = try CLI.kernels().first(where: { $0.contains("-rt-") }) else {
            Issue.record("no -rt headers; run scripts/setup")
            return
        }
        let outDir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: outDir) }
        let refused = try CLI.run(["probe", "--tree", CLI.fixture, "--kernel", rt, "--output", outDir, "--no-cache"])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("PREEMPT_RT"))
        #expect(!FileManager.default.fileExists(atPath: outDir))
        let accepted = try CLI.run(["probe", "--tree", CLI.fixture, "--kernel", rt, "--output", outDir, "--no-cache"],
                                   environment: ["IGNORE_PREEMPT_RT_PRESENCE": "1"])
        #expect(accepted.status == 0, "\(accepted.stderr)")
        #expect(FileManager.default.fileExists(atPath: outDir + "/functions.h"))
    }

    @Test func explainShowsCommandDiagnosticsAndReasoning() throws {
        let kernel = try CLI.standardKernel("6.1.")
        let out = try CLI.run(["probe", "explain", "NV_DRM_CLIENT_SETUP_PRESENT", "--tree", CLI.fixture, "--kernel", kernel])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout.contains("drm_client_setup"))
        #expect(out.stdout.contains("command: "))
        #expect(out.stdout.contains("why:"))
    }

    @Test func diffBetweenKernelsNamesChangedMacros() throws {
        let a = try CLI.standardKernel("6.1.")
        let b = try CLI.standardKernel("6.12.")
        let out = try CLI.run(["probe", "diff", "--tree", CLI.fixture, "--kernel", a, "--kernel", b, "--json"])
        #expect(out.status == 0, "\(out.stderr)")
        let document = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any]
        #expect(document?["from"] as? String == a)
        #expect((document?["changes"] as? [[String: Any]])?.isEmpty == false)
        #expect(out.stdout.contains("NV_DRM_CLIENT_SETUP_PRESENT"))
        #expect(out.stdout.contains("NV_FIXTURE_FOP_FLAGS_PRESENT"))
        #expect(!out.stdout.contains("NV_MM_HAS_MMAP_LOCK"))
    }

    @Test func listPrintsTheCatalog() throws {
        let out = try CLI.run(["probe", "list", "--json"])
        #expect(out.status == 0)
        let rows = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]] ?? []
        // 224 tests of 595.45.04 plus older releases' tests, with one template per export-check family.
        #expect(rows.count >= 190)
        #expect(rows.allSatisfy { !(($0["note"] as? String) ?? "").isEmpty })
    }

    /// A sound cache entry copied onto another key's file name (what a shared or synced CI
    /// cache can do) is refused, recomputed and counted: the headers stay the reference's.
    @Test func crossCopiedCacheEntryIsRejected() throws {
        let kernel = try CLI.standardKernel("6.1.")
        let golden = try GoldenFiles.directory(for: kernel).get()
        let cache = CLI.temporaryDirectory(), outDir = CLI.temporaryDirectory()
        defer {
            try? FileManager.default.removeItem(atPath: cache)
            try? FileManager.default.removeItem(atPath: outDir)
        }
        let probe = ["probe", "--tree", CLI.fixture, "--kernel", kernel, "--cache-dir", cache, "--output", outDir]
        let cold = try CLI.run(probe + ["--quiet"])
        #expect(cold.status == 0, "\(cold.stderr)")
        // Entries live in two-hex-digit folders; their fourth line (after the format, key
        // and `variant` lines) is the answer of the newest outcome, here the only one.
        let fm = FileManager.default
        let entries = try fm.contentsOfDirectory(atPath: cache).filter { $0.count == 2 }.sorted().flatMap { dir in
            try fm.contentsOfDirectory(atPath: "\(cache)/\(dir)").sorted().map { "\(cache)/\(dir)/\($0)" }
        }
        func answer(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.split(separator: "\n").dropFirst(3).first.map(String.init)
        }
        let defined = try #require(entries.first { answer($0) == "ok 1" }, "no entry answers defined")
        let undefined = try #require(entries.first { answer($0) == "ok 0" }, "no entry answers undefined")
        try fm.removeItem(atPath: undefined)
        try fm.copyItem(atPath: defined, toPath: undefined)

        let warm = try CLI.run(probe + ["--verbose"])
        #expect(warm.status == 0, "\(warm.stderr)")
        #expect(warm.stdout.contains("1 rejected entry (corrupt or sealed for another key; recomputed)"), "\(warm.stdout)")
        #expect(warm.stdout.contains("1 rejected cache entry recomputed"), "\(warm.stdout)")
        for header in ["functions", "generic", "macros", "symbols", "types", "headers", "patches"] {
            let mine = try String(contentsOfFile: "\(outDir)/\(header).h", encoding: .utf8)
            let expected = try String(contentsOfFile: "\(golden)/\(header).h", encoding: .utf8)
            #expect(mine == expected, "\(header).h differs from the reference after a cross-copied cache entry")
        }
        // The foreign entry was overwritten by one sealed for its own name, which the next run trusts.
        let name = URL(fileURLWithPath: undefined).lastPathComponent
        #expect(try String(contentsOfFile: undefined, encoding: .utf8).contains("\nkey \(name)\n"))
        #expect(answer(undefined) == "ok 0")
        let again = try CLI.run(probe)
        #expect(again.status == 0)
        #expect(!again.stdout.contains("rejected"), "\(again.stdout)")
    }

    /// A probe killed with SIGKILL halfway leaves no half-written header, and a later
    /// probe with the same cache gives the reference results.
    @Test func killedProbeNeverChangesALaterResult() throws {
        let kernel = try CLI.standardKernel("6.12.")
        let golden = try GoldenFiles.directory(for: kernel).get()
        let cache = CLI.temporaryDirectory(), outDir = CLI.temporaryDirectory()
        defer {
            try? FileManager.default.removeItem(atPath: cache)
            try? FileManager.default.removeItem(atPath: outDir)
        }
        for delay in [0.8, 2.0, 4.0] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: CLI.binary)
            process.arguments = ["probe", "--quiet", "--tree", CLI.fixture, "--kernel", kernel, "--cache-dir", cache, "--output", outDir]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            Thread.sleep(forTimeInterval: delay)
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            // Whatever exists is complete: every header ends with its version line.
            for header in ["functions", "generic", "macros", "symbols", "types", "headers"] {
                if let text = try? String(contentsOfFile: "\(outDir)/\(header).h", encoding: .utf8) {
                    #expect(text.hasSuffix("\"\(kernel)\"\n"), "\(header).h is partial after SIGKILL at \(delay) s")
                }
            }
        }
        let again = try CLI.run(["probe", "--quiet", "--tree", CLI.fixture, "--kernel", kernel, "--cache-dir", cache, "--output", outDir])
        #expect(again.status == 0, "\(again.stderr)")
        let leftovers = (FileManager.default.enumerator(atPath: outDir)?.allObjects as? [String] ?? []).filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty, "temporary files left behind: \(leftovers)")
        for header in ["functions", "generic", "macros", "symbols", "types", "headers", "patches"] {
            let mine = try String(contentsOfFile: "\(outDir)/\(header).h", encoding: .utf8)
            let expected = try String(contentsOfFile: "\(golden)/\(header).h", encoding: .utf8)
            #expect(mine == expected, "\(header).h differs from the reference after killed runs")
        }
    }

    /// After nvbuild probe, the tree's own make finds conftest/ complete and builds the modules.
    @Test func treeBuildsWithProbeOutput() throws {
        let kernel = try CLI.standardKernel("6.12.")
        let copy = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: copy) }
        try FileManager.default.copyItem(atPath: CLI.fixture, toPath: copy)
        let probe = try CLI.run(["probe", "--quiet", "--tree", copy, "--kernel", kernel])
        #expect(probe.status == 0, "\(probe.stderr)")
        let make = Process()
        make.executableURL = URL(fileURLWithPath: "/usr/bin/make")
        make.arguments = ["-C", "/lib/modules/\(kernel)/build", "M=\(copy)", "CC=x86_64-linux-gnu-gcc-12", "modules"]
        make.standardOutput = FileHandle.nullDevice
        make.standardError = FileHandle.nullDevice
        try make.run()
        make.waitUntilExit()
        #expect(make.terminationStatus == 0)
        #expect(FileManager.default.fileExists(atPath: copy + "/nvfixture.ko"))
        #expect(FileManager.default.fileExists(atPath: copy + "/nvfixture-drm.ko"))
    }
}
