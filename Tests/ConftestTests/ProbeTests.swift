@testable import Conftest
import Foundation
import KernelTree
import NVBuildSupport
import Testing
import TestSupport

/// The fixture tree probed against the real Debian kernels: every generated
/// header must equal the golden file the reference conftest.sh produced for
/// the same tests on the same named kernel.
@Suite(.serialized) struct FixtureProbeTests {
    @Test(arguments: ["6.1.", "6.12."])
    func fixtureMatchesReferenceGolden(series: String) async throws {
        let kernel = try #require(Repo.kernels().first { $0.release.hasPrefix(series) }, "run scripts/setup")
        let golden = try GoldenFiles.directory(for: kernel.release).get()
        let report = try await Prober.run(try Repo.options(kernel: kernel))
        let out = try Repo.scratch("golden")
        defer { try? FileManager.default.removeItem(atPath: out) }
        try ConftestOutput.write(report, to: out)
        for header in ["functions", "generic", "macros", "symbols", "types", "headers", "patches"] {
            let mine = try String(contentsOfFile: "\(out)/\(header).h", encoding: .utf8)
            let expected = try String(contentsOfFile: "\(golden)/\(header).h", encoding: .utf8)
            #expect(mine == expected, "\(header).h differs from the reference on \(kernel.release)")
        }
        // Only the fixture's own test is delegated; everything else comes from the catalog.
        #expect(report.delegated == ["fixture_file_operations_has_fop_flags"])
        #expect(FileManager.default.fileExists(atPath: "\(out)/compile-tests/is_export_symbol_present_close_fd.h"))
        #expect(FileManager.default.fileExists(atPath: "\(out)/header_presence/drm/drm_client_setup.h.part"))
    }

    @Test func preemptRTKernelFailsUnlessIgnored() async throws {
        let rt = try #require(KernelDiscovery().installedKernels().first { $0.release.contains("-rt-") }, "run scripts/setup")
        do {
            _ = try await Prober.run(try Repo.options(kernel: rt, only: ["vm_fault_t"]))
            Issue.record("the -rt kernel was accepted")
        } catch let error as UserError {
            #expect(error.kind == .failed)
            #expect(error.message.contains("preempt_rt_sanity_check"))
            #expect(error.message.contains("PREEMPT_RT"))
        }
        let report = try await Prober.run(try Repo.options(kernel: rt, environment: ["IGNORE_PREEMPT_RT_PRESENCE": "1"], only: ["vm_fault_t"]))
        #expect(report.test("vm_fault_t")?.lines == [.define("NV_VM_FAULT_T_IS_PRESENT", value: nil)])
    }

    @Test func missingCompilerIsAnEnvironmentErrorAndWritesNothing() async throws {
        let kernel = try #require(Repo.kernels().first)
        do {
            _ = try await Prober.run(try Repo.options(kernel: kernel, compiler: "/nonexistent/gcc-99"))
            Issue.record("a missing compiler was accepted")
        } catch let error as UserError {
            #expect(error.kind == .environment)
            #expect(error.message.contains("/nonexistent/gcc-99"))
            #expect(error.message.contains("apt-get install"))
        }
    }

    @Test func missingLauncherIsAnEnvironmentError() async throws {
        let kernel = try #require(Repo.kernels().first { $0.installedCompiler != nil })
        let compiler = try #require(kernel.installedCompiler).compiler
        do {
            _ = try await Prober.run(try Repo.options(kernel: kernel, compiler: "/nonexistent/ccache \(compiler)"))
            Issue.record("a missing launcher was accepted")
        } catch let error as UserError {
            #expect(error.kind == .environment)
            #expect(error.message.contains("launcher '/nonexistent/ccache'"))
        }
    }

    @Test func missingHeadersNameThePackage() throws {
        do {
            _ = try KernelDiscovery().kernel(release: "6.99.0-1-amd64")
            Issue.record("missing headers were accepted")
        } catch let error as UserError {
            #expect(error.kind == .environment)
            #expect(error.message.contains("linux-headers-6.99.0-1-amd64"))
        }
    }

    @Test func strictModeListsTestsTheCatalogLacks() async throws {
        let kernel = try #require(Repo.kernels().first)
        var options = try Repo.options(kernel: kernel)
        options.strict = true
        do {
            _ = try await Prober.run(options)
            Issue.record("strict mode delegated a test")
        } catch let error as UserError {
            #expect(error.message.contains("fixture_file_operations_has_fop_flags"))
        }
    }

    /// A warm probe compiles nothing; a corrupted or truncated entry is
    /// recomputed, and the results never change.
    @Test func cacheIsReusedAndSurvivesCorruption() async throws {
        let kernel = try #require(Repo.kernels().first)
        let cacheDir = try Repo.scratch("cache")
        defer { try? FileManager.default.removeItem(atPath: cacheDir) }
        let only: Set<String> = ["set_memory_uc", "mm_has_mmap_lock", "of_dma_configure", "pin_user_pages"]
        let cold = try await Prober.run(try Repo.options(kernel: kernel, cache: try ResultCache(directory: cacheDir), only: only))
        #expect(cold.compiles > 0)
        let warm = try await Prober.run(try Repo.options(kernel: kernel, cache: try ResultCache(directory: cacheDir), only: only))
        #expect(warm.compiles == 0)
        #expect(warm.tests.map(\.lines) == cold.tests.map(\.lines))

        // Corrupt every entry in a different way: truncate, flip bytes, empty.
        let entries = FileManager.default.enumerator(atPath: cacheDir)!.compactMap { $0 as? String }
            .filter { !$0.hasSuffix("/") && (try? FileManager.default.attributesOfItem(atPath: cacheDir + "/" + $0)[.type] as? FileAttributeType) == .typeRegular }
        #expect(!entries.isEmpty)
        for (i, entry) in entries.enumerated() {
            let path = cacheDir + "/" + entry
            var data = try Data(contentsOf: URL(fileURLWithPath: path))
            switch i % 3 {
            case 0: data = data.prefix(data.count / 2)
            case 1: data = Data(data.map { $0 == UInt8(ascii: "t") ? UInt8(ascii: "f") : $0 })
            default: data = Data()
            }
            try data.write(to: URL(fileURLWithPath: path))
        }
        let again = try await Prober.run(try Repo.options(kernel: kernel, cache: try ResultCache(directory: cacheDir), only: only))
        #expect(again.compiles == cold.compiles)
        #expect(again.tests.map(\.lines) == cold.tests.map(\.lines))
        #expect(again.cacheRejected > 0)
    }

    /// An entry answers only the key it was sealed for: one copied onto another key's name
    /// is a counted miss, an entry of the previous format an uncounted one; both are
    /// overwritten by the next store.
    @Test func cacheEntryIsBoundToItsKey() throws {
        let dir = try Repo.scratch("cache-key")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cache = try ResultCache(directory: dir)
        cache.store(step: "step-a", ok: true, output: "defined", dependencies: [])
        cache.store(step: "step-b", ok: false, output: "undefined", dependencies: [])
        let a = dir + "/" + String(cache.stepKey("step-a").prefix(2)) + "/" + cache.stepKey("step-a")
        let b = dir + "/" + String(cache.stepKey("step-b").prefix(2)) + "/" + cache.stepKey("step-b")
        #expect(try ResultCache(directory: dir).lookup(step: "step-b")?.output == "undefined")

        try FileManager.default.removeItem(atPath: b)
        try FileManager.default.copyItem(atPath: a, toPath: b)
        let fresh = try ResultCache(directory: dir)
        #expect(fresh.lookup(step: "step-b") == nil)
        #expect(fresh.lookup(step: "step-a")?.output == "defined")
        #expect(fresh.rejectedEntries == 1)
        fresh.store(step: "step-b", ok: false, output: "undefined", dependencies: [])
        #expect(fresh.lookup(step: "step-b")?.output == "undefined")

        // The previous format, sealed and sound but without its key: a miss, not a rejection.
        let body = try #require(String(contentsOfFile: a, encoding: .utf8).components(separatedBy: "checksum ").first)
        let v4 = body.replacingOccurrences(of: "\(ResultCache.entryFormat)\nkey \(cache.stepKey("step-a"))\nvariant\n", with: "nvbuild-cache 4\nkey \(cache.stepKey("step-a"))\n")
        #expect(v4 != body)
        try ResultCache.sealed(v4).write(to: URL(fileURLWithPath: a))
        let upgraded = try ResultCache(directory: dir)
        #expect(upgraded.lookup(step: "step-a") == nil)
        #expect(upgraded.rejectedEntries == 0)

        // A manifest moved onto another id is refused too (its id is inside the seal).
        let manifests = FileManager.default.enumerator(atPath: dir + "/manifests")!.compactMap { $0 as? String }.filter { $0.count > 3 }
        #expect(manifests.count == 1)
        let manifest = dir + "/manifests/" + manifests[0]
        let text = try String(contentsOfFile: manifest, encoding: .utf8)
        #expect(text.hasPrefix("nvbuild-manifest 4\nid "))
        #expect(ResultCache.manifestLines(Data(text.utf8), id: String(repeating: "0", count: 64)) == nil)
        #expect(ResultCache.manifestVerdict(Data(text.utf8), id: String(repeating: "0", count: 64)) == .rejected)
    }
}

@Suite struct ResultCacheVariantTests {
    /// One key serves every kernel whose flags abstract to the same text (the kernel's
    /// folders become placeholders); each kernel's outcome must survive the other's
    /// store, or probing 6.1 and 6.12 in turn recompiles everything every time.
    @Test func outcomesOfTwoKernelsShareAKeyWithoutEvictingEachOther() throws {
        let dir = try Repo.scratch("cache-variants")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let kernelA = dir + "/kernel-a", kernelB = dir + "/kernel-b"
        for (folder, text) in [(kernelA, "#define X 1\n"), (kernelB, "#define X 2\n")] {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            try text.write(toFile: folder + "/x.h", atomically: true, encoding: .utf8)
        }
        func cache(for kernel: String) throws -> ResultCache {
            let c = try ResultCache(directory: dir + "/cache")
            c.abstract([(kernel, "{kernel-output}")])
            return c
        }
        // The step names its kernel's header by its real path; both abstract to one key.
        func step(_ kernel: String) -> String { "check \(kernel)/x.h" }
        #expect(try cache(for: kernelA).stepKey(step(kernelA)) == (try cache(for: kernelB).stepKey(step(kernelB))))
        try cache(for: kernelA).store(step: step(kernelA), ok: true, output: "from a", dependencies: [kernelA + "/x.h"])
        #expect(try cache(for: kernelB).lookup(step: step(kernelB)) == nil)  // B's header differs: a miss
        try cache(for: kernelB).store(step: step(kernelB), ok: false, output: "from b", dependencies: [kernelB + "/x.h"])
        for _ in 0..<2 {
            #expect(try cache(for: kernelA).lookup(step: step(kernelA))?.output == "from a")
            #expect(try cache(for: kernelB).lookup(step: step(kernelB))?.output == "from b")
        }
        // A's header changes: A misses, B still hits; A's new outcome replaces none of B's.
        try "#define X 3\n".write(toFile: kernelA + "/x.h", atomically: true, encoding: .utf8)
        #expect(try cache(for: kernelA).lookup(step: step(kernelA)) == nil)
        try cache(for: kernelA).store(step: step(kernelA), ok: true, output: "from a, changed", dependencies: [kernelA + "/x.h"])
        #expect(try cache(for: kernelA).lookup(step: step(kernelA))?.output == "from a, changed")
        #expect(try cache(for: kernelB).lookup(step: step(kernelB))?.output == "from b")
        // Outputs of any bytes (newlines, empty) survive the round trip beside each other.
        let odd = ["", "\n", "line\nvariant\nok 1\n", "é\u{0}"]
        for (i, output) in odd.enumerated() {
            let folder = dir + "/kernel-\(i)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            try "#define X \(10 + i)\n".write(toFile: folder + "/x.h", atomically: true, encoding: .utf8)
            try cache(for: folder).store(step: step(folder), ok: i % 2 == 0, output: output, dependencies: [folder + "/x.h"])
        }
        for (i, output) in odd.enumerated() {
            let hit = try cache(for: dir + "/kernel-\(i)").lookup(step: step(dir + "/kernel-\(i)"))
            #expect(hit?.output == output)
            #expect(hit?.ok == (i % 2 == 0))
        }
        #expect(try cache(for: kernelB).lookup(step: step(kernelB))?.output == "from b")
    }
}

@Suite struct OutputAssemblyTests {
    @Test func patchTableListsPatchFiles() {
        let text = ConftestOutput.patches(["patch-fix_a.h"])
        #expect(text.hasPrefix("#include \"patch-fix_a.h\"\n"))
        #expect(text.contains("{ \"fix_a\", NV_PATCH_fix_a_DESCRIPTION },\n"))
        #expect(text.hasSuffix("{ NULL, NULL } };\n"))
    }

    @Test func versionLineKeepsTheReferenceIndentation() {
        #expect(ConftestOutput.versionLine(utsRelease: "\"6.1.0-56-amd64\"") == "// Kernel version:             \"6.1.0-56-amd64\"")
    }

    @Test func linesAreNormalisedLikeTheShellEchoesThem() {
        #expect(ProbeSource.normalize("  #define   NV_X    3 ") == "#define NV_X 3")
    }

    @Test func gplExportNeedsNoNamespace() {
        func entry(_ line: String) -> SymbolExport { ModuleSymvers(parsing: line).exports[0] }
        #expect(Evaluation.exports(entry("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL_GPL\t"), symbol: "foo", gplOnly: true))
        #expect(!Evaluation.exports(entry("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL_GPL\tNS"), symbol: "foo", gplOnly: true))
        #expect(!Evaluation.exports(entry("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL\t"), symbol: "foo", gplOnly: true))
        #expect(Evaluation.exports(entry("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL\t"), symbol: "foo", gplOnly: false))
        #expect(!Evaluation.exports(entry("0x1\tfoobar\tvmlinux\tEXPORT_SYMBOL\t"), symbol: "foo", gplOnly: false))
    }

    @Test func bareGPLExportEndsTheLine() {
        #expect(Evaluation.endsWithBareGPLExport("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL_GPL", symbol: "foo"))
        #expect(Evaluation.endsWithBareGPLExport("0x1\tfoo\tvmlinux\tEXPORT_UNUSED_SYMBOL_GPL", symbol: "foo"))
        #expect(!Evaluation.endsWithBareGPLExport("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL_GPL\t", symbol: "foo"))
        #expect(!Evaluation.endsWithBareGPLExport("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL", symbol: "foo"))
        #expect(!Evaluation.endsWithBareGPLExport("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL_GPL_FUTURE", symbol: "foo"))
        #expect(!Evaluation.endsWithBareGPLExport("0x1\tfoobar\tvmlinux\tEXPORT_SYMBOL_GPL", symbol: "foo"))
        #expect(!Evaluation.endsWithBareGPLExport("0x1\tfoo\tEXPORT_SYMBOL_GPL", symbol: "foo"))
    }

    @Test func plainExportIsSymbolOrGPLWithoutNamespace() {
        func entry(_ line: String) -> SymbolExport { ModuleSymvers(parsing: line).exports[0] }
        #expect(Evaluation.exportsPlainly(entry("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL\t"), symbol: "foo"))
        #expect(Evaluation.exportsPlainly(entry("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL_GPL\t"), symbol: "foo"))
        #expect(Evaluation.exportsPlainly(entry("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL_GPL"), symbol: "foo"))
        #expect(!Evaluation.exportsPlainly(entry("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL_GPL\tNS"), symbol: "foo"))
        #expect(!Evaluation.exportsPlainly(entry("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL_GPL_FUTURE\t"), symbol: "foo"))
        #expect(!Evaluation.exportsPlainly(entry("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL\t"), symbol: "fo"))
        // The v5.4 layout: namespace before the module, the type last.
        #expect(Evaluation.exportsPlainly(entry("0x1\tfoo\tNS\tvmlinux\tEXPORT_SYMBOL"), symbol: "foo"))
    }
}

@Suite struct MacroLineTests {
    @Test func linesAreTypedAndWrittenBackExactly() {
        #expect(MacroLine(parsing: "#define NV_X") == .define("NV_X", value: nil))
        #expect(MacroLine(parsing: "#define NV_X 3") == .define("NV_X", value: "3"))
        #expect(MacroLine(parsing: "#define NV_X a b") == .define("NV_X", value: "a b"))
        #expect(MacroLine(parsing: "#undef NV_X") == .undef("NV_X"))
        for odd in ["#undef NV_X 1", "#undef", "#define", "#define  NV_X", "typedef int x;", "#if 0"] {
            #expect(MacroLine(parsing: odd) == .other(odd))
        }
        for text in ["#define NV_X 3", "#undef NV_X", "#define  NV_X", "#if 0"] {
            #expect(MacroLine(parsing: text).text == text)
        }
    }
}

@Suite struct ProbeDiagnosticTests {
    /// An unguarded include of a missing header is a warning at the catalog definition.
    @Test func missingHeaderFailureIsADiagnosticAtTheDefinition() throws {
        let catalog = try Repo.catalog()
        let definition = try #require(catalog.definitions.first { $0.releases == nil && !$0.name.contains("{") })
        let failed = ProbeOutcome(probe: "code", compiled: false,
                                  diagnostics: "conftest.c:3:10: fatal error: linux/nope.h: No such file or directory\n", command: [])
        let diagnostic = try #require(EvaluationStage.suspiciousFailure([failed], definition: definition))
        #expect(diagnostic.severity == .warning)
        #expect(diagnostic.file == definition.location.file)
        #expect(diagnostic.line == definition.location.line)
        #expect(diagnostic.message.hasPrefix(definition.name + ": "))
        #expect(diagnostic.message.contains("linux/nope.h: No such file or directory"))
        #expect(diagnostic.remedy != nil)
        let compiled = ProbeOutcome(probe: "code", compiled: true, diagnostics: failed.diagnostics, command: [])
        #expect(EvaluationStage.suspiciousFailure([compiled], definition: definition) == nil)
    }
}
