import Foundation
import NVBuildSupport
import Testing

/// A conftest.sh arm that changed upstream: the probe must not follow the catalog's
/// definition (verified against the old arm), but delegate the test to the tree's
/// conftest.sh, report it as changed upstream, and refuse it under --strict.
@Suite struct ChangedUpstreamTests {
    static let tree = CLI.repository + "/Tests/Fixtures/arms-tree"
    static let catalog = CLI.repository + "/Tests/Fixtures/arms-catalog"
    static let altered = "fixture_arms_mm_has_mmap_lock"

    /// A copy of the arms fixture whose mm_has_mmap_lock arm includes another header (same
    /// macro, different check) and whose list_is_first arm only has a reworded comment.
    static func alteredCopy() throws -> String {
        let dir = CLI.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let copy = dir + "/tree"
        try FileManager.default.copyItem(atPath: tree, toPath: copy)
        let script = try String(contentsOfFile: copy + "/conftest.sh", encoding: .utf8)
        let changed = script
            .replacingOccurrences(of: "            #include <linux/mm_types.h>", with: "            #include <linux/mm.h>")
            .replacingOccurrences(of: "# Whether list_is_first() has a prototype (v5.1).", with: "# list_is_first() gained a prototype in v5.1.")
        try #require(changed.components(separatedBy: "\n").count == script.components(separatedBy: "\n").count && changed != script)
        try changed.write(toFile: copy + "/conftest.sh", atomically: true, encoding: .utf8)
        return copy
    }

    static func probe(_ tree: String, kernel: String, _ extra: [String]) throws -> (CLI.Output, String) {
        let out = CLI.temporaryDirectory()
        return (try CLI.run(["probe", "--no-cache", "--catalog", catalog, "--tree", tree, "--kernel", kernel, "--output", out] + extra), out)
    }

    @Test func alteredArmIsDelegatedReportedAndRefusedUnderStrict() throws {
        let kernel = try CLI.standardKernel("6.1.")
        // The fixture as its catalog was verified: every test from the catalog, --strict passes.
        let (clean, cleanOut) = try Self.probe(Self.tree, kernel: kernel, ["--strict", "--json"])
        #expect(clean.status == 0, "\(clean.stderr)")
        let cleanReport = try #require(try JSONSerialization.jsonObject(with: Data(clean.stdout.utf8)) as? [String: Any])
        let cleanTests = try #require(cleanReport["tests"] as? [[String: Any]])
        #expect(cleanTests.count == 3 && cleanTests.allSatisfy { $0["origin"] as? String == "catalog" })
        #expect((cleanReport["catalogMatching"] as? [String: Any])?["fingerprints"] != nil)

        let copy = try Self.alteredCopy()
        defer { try? FileManager.default.removeItem(atPath: (copy as NSString).deletingLastPathComponent) }
        let (json, jsonOut) = try Self.probe(copy, kernel: kernel, ["--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let tests = try #require(report["tests"] as? [[String: Any]])
        let altered = try #require(tests.first { $0["name"] as? String == Self.altered })
        #expect(altered["origin"] as? String == "delegated")
        #expect(altered["delegation"] as? String == "changed-upstream")
        // Comments are not part of the fingerprint: the reworded arm still matches.
        #expect(tests.first { $0["name"] as? String == "fixture_arms_list_is_first" }?["origin"] as? String == "catalog")
        // The tree's conftest.sh computed the altered test, and its header holds that line;
        // here the changed check agrees with the old one.
        let types = try String(contentsOfFile: jsonOut + "/types.h", encoding: .utf8)
        let cleanTypes = try String(contentsOfFile: cleanOut + "/types.h", encoding: .utf8)
        #expect(types.contains("NV_FIXTURE_ARMS_MM_HAS_MMAP_LOCK") && types == cleanTypes)

        let (summary, _) = try Self.probe(copy, kernel: kernel, [])
        #expect(summary.status == 0)
        #expect(summary.stdout.contains("1 delegated (0 unknown, 1 changed upstream)"))
        #expect(summary.stderr.contains("changed upstream") && summary.stderr.contains(Self.altered))

        let (strict, _) = try Self.probe(copy, kernel: kernel, ["--strict"])
        #expect(strict.status == 1)
        #expect(strict.stderr.contains("changed upstream") && strict.stderr.contains(Self.altered))
        #expect(!strict.stderr.contains("fixture_arms_list_is_first"))

        let list = try CLI.run(["probe", "list", "--catalog", Self.catalog, "--tree", copy])
        #expect(list.status == 0)
        #expect(list.stdout.split(separator: "\n").contains { $0.hasPrefix(Self.altered + "\tchanged-upstream\t") })
        for dir in [cleanOut, jsonOut] { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// An export test also reads the Module.symvers of the folder the tree's conftest.sh
    /// names in NVIDIA_OOT_PATH (it differs across releases), when that folder exists: the
    /// probe and the tree's own conftest.sh give the same line with and without it.
    @Test func exportTestsReadTheScriptsOutOfTreeFolder() async throws {
        let kernel = try CLI.standardKernel("6.1.")
        let dir = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let copy = dir + "/tree", outOfTree = dir + "/oot"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Self.tree, toPath: copy)
        let symbol = "nvbuild_oot_probe_symbol", test = "fixture_arms_export_present_nvbuild_oot_probe_symbol"
        let script = try String(contentsOfFile: copy + "/conftest.sh", encoding: .utf8)
        let moved = script.replacingOccurrences(of: "NVIDIA_OOT_PATH=\"/usr/src/nvidia/nvidia-public\"", with: "NVIDIA_OOT_PATH=\"\(outOfTree)\"")
        try #require(moved != script)
        try moved.write(toFile: copy + "/conftest.sh", atomically: true, encoding: .utf8)
        let kbuild = copy + "/nvarms/nvarms.Kbuild"
        try (try String(contentsOfFile: kbuild, encoding: .utf8) + "NV_CONFTEST_SYMBOL_COMPILE_TESTS += \(test)\n")
            .write(toFile: kbuild, atomically: true, encoding: .utf8)

        func lines() async throws -> (probe: String, script: String) {
            let (probe, out) = try Self.probe(copy, kernel: kernel, ["--strict"])
            #expect(probe.status == 0, "\(probe.stderr)")
            let header = (try? String(contentsOfFile: out + "/symbols.h", encoding: .utf8)) ?? ""
            try? FileManager.default.removeItem(atPath: out)
            let own = try await ProcessRunner().run(
                ["/bin/sh", copy + "/conftest.sh", "gcc", "x86_64", "/lib/modules/\(kernel)/source", "/lib/modules/\(kernel)/build", "compile_tests", "", test])
            let line = { (text: String) in text.split(separator: "\n").first { $0.contains("PRESENT_\(symbol)") }.map(String.init) ?? "" }
            return (line(header), line(own.standardOutput))
        }
        let absent = try await lines()
        #expect(absent.probe == "#define NV_FIXTURE_ARMS_EXPORT_PRESENT_\(symbol) 0" && absent.probe == absent.script, "\(absent)")

        try FileManager.default.createDirectory(atPath: outOfTree, withIntermediateDirectories: true)
        try "0x12345678\t\(symbol)\tnvidia\tEXPORT_SYMBOL\t\n".write(toFile: outOfTree + "/Module.symvers", atomically: true, encoding: .utf8)
        let present = try await lines()
        #expect(present.probe == "#define NV_FIXTURE_ARMS_EXPORT_PRESENT_\(symbol) 1" && present.probe == present.script, "\(present)")
    }

    /// A tree without NVIDIA's conftest.sh arms says that the catalog was matched by name.
    @Test func treeWithoutArmsSaysItIsMatchedByName() throws {
        let list = try CLI.run(["probe", "list", "--tree", CLI.fixture, "--json"])
        #expect(list.status == 0)
        let listing = try #require(try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [String: Any])
        let names = try #require((listing["catalogMatching"] as? [String: Any])?["names"] as? [String: Any])
        #expect((names["reason"] as? String)?.contains("conftest.sh") == true)
    }
}
