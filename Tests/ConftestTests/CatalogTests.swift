@testable import Conftest
import Foundation
import Testing

@Suite struct CatalogHygieneTests {
    @Test func everyEntryParsesAndHasANote() throws {
        let catalog = try Repo.catalog()
        #expect(!catalog.definitions.isEmpty)
        for d in catalog.definitions {
            #expect(!d.note.isEmpty, "\(d.location): \(d.name) has no note")
            #expect(!d.macros.isEmpty, "\(d.location): \(d.name) declares no macro")
        }
    }

    /// Evaluates every definition under every combination of probe outcomes and
    /// environment, and checks each emitted line names a declared macro.
    @Test func entriesEmitExactlyTheMacrosTheyDeclare() throws {
        for d in try Repo.catalog().definitions where !d.name.contains("{symbol}") {
            let probes = ProbeSource.probes(of: d).map(\.name)
            let combos = 1 << probes.count
            var emitted = Set<String>()
            for mask in 0..<combos {
                var outcomes: [String: ProbeOutcome] = [:]
                for (i, p) in probes.enumerated() {
                    outcomes[p] = ProbeOutcome(probe: p, compiled: mask & (1 << i) != 0, diagnostics: "", command: [])
                }
                for env in [[:], ["GRID_BUILD": "1", "GRID_BUILD_CSP": "7", "VGX_BUILD": "1", "VGX_KVM_BUILD": "1", "VGX_DEVICE_VM_BUILD": "1"]] {
                    let verdict = Evaluation.verdict(for: d, outcomes: outcomes, symvers: [], environment: env)
                    // `#error …` is a line some releases' tests write on purpose when no
                    // prototype matches (dma_buf_export_args, wait_on_bit_lock_argument_count).
                    for line in verdict.lines where !line.description.hasPrefix("#error ") {
                        #expect(line.macro != nil, "\(d.name): malformed line '\(line)'")
                        if let macro = line.macro { emitted.insert(macro) }
                    }
                }
            }
            #expect(emitted.isSubset(of: Set(d.macros)), "\(d.location): \(d.name) emits \(emitted.subtracting(d.macros).sorted()) it does not declare")
        }
    }

    /// The result cache leaves the driver's version define out of its keys; that is
    /// sound only while no test reads it.
    @Test func noEntryReadsTheDriverVersionDefine() throws {
        for d in try Repo.catalog().definitions {
            let text = ([d.code ?? ""] + d.probes.map(\.code) + d.includes.map(\.text) + d.files.map(\.content)).joined()
            #expect(!text.contains("NV_VERSION_STRING"), "\(d.location): \(d.name) reads NV_VERSION_STRING")
        }
    }

    @Test func noTwoTestsEmitTheSameMacro() throws {
        // Upstream writes NV_LINUX_OF_H_USABLE from two tests (of_find_node_by_phandle
        // and of_node_to_nid), each from the same linux/of.h compile; and
        // NV_KERNEL_WRITE_HAS_POINTER_POS_ARG from `kernel_write` in 515 and 520 trees, from
        // `kernel_write_has_pointer_pos_arg` after the test was renamed.
        let shared: Set<String> = ["NV_LINUX_OF_H_USABLE", "NV_KERNEL_WRITE_HAS_POINTER_POS_ARG"]
        var owner: [String: String] = [:]
        for d in try Repo.catalog().definitions {
            for m in d.macros where !shared.contains(m) {
                if let other = owner[m] {
                    #expect(other == d.name, "\(m) is emitted by both \(other) and \(d.name)")
                }
                owner[m] = d.name
            }
        }
    }

    @Test func releaseVariantsDoNotOverlap() throws {
        let catalog = try Repo.catalog()
        let byName = Dictionary(grouping: catalog.definitions, by: \.name).filter { $0.value.count > 1 }
        for (name, defs) in byName {
            #expect(defs.allSatisfy { $0.releases != nil }, "\(name) has several definitions; each needs Releases:")
            for release in ["580.105.08", "590.48.01", "595.45.04"] {
                let matching = defs.filter { $0.releases?.contains(release) ?? false }
                #expect(matching.count <= 1, "\(name): \(matching.count) definitions apply to \(release)")
            }
        }
    }

    @Test func releaseAlternatives() {
        let set = ReleaseSet(terms: ["<515", "|", ">=580", "<595"])
        #expect(set.contains("0.1.0"))
        #expect(set.contains("580.105.08"))
        #expect(!set.contains("570.211.01"))
        #expect(!set.contains("595.45.04"))
        #expect(!ReleaseSet.overlap(set, ReleaseSet(terms: [">=515", "<580"])))
        #expect(ReleaseSet.overlap(set, ReleaseSet(terms: [">=590"])))
        #expect(ReleaseSet.overlap(set, nil))
    }

    @Test func exportChecksTakeSymversCandidates() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/nvbuild-symvers-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let text = "Test: is_export_symbol_present_{symbol}\nCheck: export plain {symbol}\nMacro: NV_P_{symbol}\nUpstream: 0123456789abcdef\nSymvers: {output}/Module.symvers\nNote: n\n"
        try text.write(toFile: dir + "/t.conftest", atomically: true, encoding: .utf8)
        let catalog = try Catalog.load(directory: dir)
        let d = try #require(catalog.definition("is_export_symbol_present_foo", release: nil))
        #expect(d.check == .exportPlain(symbol: "foo"))
        #expect(d.symversCandidates == ["{output}/Module.symvers"])
        #expect(d.macros == ["NV_P_foo"])
    }

    @Test func templatesAnswerAnySymbolName() throws {
        let catalog = try Repo.catalog()
        let gpl = try #require(catalog.definition("is_export_symbol_gpl___vma_start_write", release: nil))
        #expect(gpl.macros == ["NV_IS_EXPORT_SYMBOL_GPL___vma_start_write"])
        #expect(gpl.check == .exportGPL(symbol: "__vma_start_write"))
    }

    @Test func parserRejectsMalformedStanzas() {
        let cases = [
            "Test: a\nCheck: function f\nNote: n\n",  // no macro
            "Test: a\nCheck: wobble\nMacro: M\nNote: n\n",  // unknown pattern
            "Test: a\nCheck: compiles\nMacro: M\nNote: n\n",  // no code
            "Test: a\nCheck: rules\nMacro: M\nProbe: p\n    int x;\nResult: q\n    #define M\nNote: n\n",  // unknown probe
            "Test: a\nCheck: function f\nMacro: M N\nNote: n\n",  // two macros on a simple pattern
            "Test: a\nCheck: function f\nMacro: M\nNote: n\nColour: red\n",  // unknown field
        ]
        for text in cases {
            let dir = FileManager.default.temporaryDirectory.path + "/nvbuild-catalog-\(UUID().uuidString)"
            try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try? text.write(toFile: dir + "/bad.conftest", atomically: true, encoding: .utf8)
            #expect(throws: CatalogError.self) { try Catalog.load(directory: dir) }
            try? FileManager.default.removeItem(atPath: dir)
        }
    }
}

@Suite struct ReleaseSetTests {
    @Test func comparesDottedVersions() {
        #expect(ReleaseSet(terms: [">=590"]).contains("595.45.04"))
        #expect(!ReleaseSet(terms: [">=590"]).contains("580.105.08"))
        #expect(ReleaseSet(terms: ["<590.48.01"]).contains("590.44.01"))
        #expect(ReleaseSet(terms: ["580.105.08", "590.48.01"]).contains("590.48.01"))
        #expect(!ReleaseSet(terms: ["580.105.08", "590.48.01"]).contains("595.45.04"))
    }
}

@Suite struct ConftestRequestsTests {
    @Test func readsRequestsInKbuildOrderWithoutDuplicates() throws {
        let tree = try ConftestRequests.read(path: Repo.fixtureTree)
        #expect(tree.modules == ["nvfixture", "nvfixture-drm"])
        let functions = tree.requests[.functions] ?? []
        #expect(functions.first == "set_memory_uc")
        #expect(functions.filter { $0 == "vm_flags_set" }.count == 1)
        #expect((tree.requests[.types] ?? []).filter { $0 == "mm_has_mmap_lock" }.count == 1)
        #expect(tree.headerPresenceTests.first == "asm/system.h")
        #expect(tree.driverVersion == "0.1.0-fixture")
        #expect(tree.conftestScript != nil)
    }

    @Test func honoursModuleExclusion() throws {
        let tree = try ConftestRequests.read(path: Repo.fixtureTree, excluded: ["nvfixture-drm"])
        #expect(tree.modules == ["nvfixture"])
        #expect(!(tree.requests[.functions] ?? []).contains("drm_client_setup"))
    }

    @Test func presenceMacroNames() {
        #expect(ConftestRequests.presenceMacro(for: "drm/display/drm_hdcp.h") == "NV_DRM_DISPLAY_DRM_HDCP_H_PRESENT")
        #expect(ConftestRequests.presenceMacro(for: "linux/dma-resv.h") == "NV_LINUX_DMA_RESV_H_PRESENT")
    }

    @Test func unreadableTreeIsAnEnvironmentError() {
        #expect(throws: (any Error).self) { try ConftestRequests.read(path: "/nonexistent/kernel-open") }
    }
}

@Suite struct CatalogRejectionTests {
    static func load(_ text: String) throws -> Catalog {
        let dir = FileManager.default.temporaryDirectory.path + "/nvbuild-catalog-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try text.write(toFile: dir + "/t.conftest", atomically: true, encoding: .utf8)
        return try Catalog.load(directory: dir)
    }

    static func error(_ text: String) -> CatalogError? {
        do {
            _ = try load(text)
            return nil
        } catch {
            return error as? CatalogError
        }
    }

    static let test = "Test: a\nCheck: function f\nMacro: M\nNote: n\n"

    @Test func repeatedSingleValueFieldIsRejectedWithItsLine() throws {
        let e = try #require(Self.error("Test: a\nCheck: function f\nMacro: M\nNote: n\nCheck: function g\n"))
        #expect(e.location.line == 5)
        #expect(e.location.file.hasSuffix("/t.conftest"))
        #expect(e.message.contains("'Check:'") && e.message.contains("line 2"))
        #expect(Self.error("Includes: b\nCode: x\nCode: y\n")?.location.line == 3)
        // Multi-value fields may repeat.
        #expect(Self.error("Test: a\nCheck: compiles\nMacro: M\nInclude: x.h\nInclude: y.h\nCode: int x;\nNote: n\n") == nil)
    }

    @Test func overlappingReleasesAreRejectedWithBothLocations() throws {
        let overlapping = [
            (">=590", "<595"), (">=595", "595.45.04"), ("<=595", ">=595"), ("590.48.01 595.45.04", "595.45.04"), (nil, "<590"),
        ]
        for (a, b) in overlapping {
            let first = Self.test + (a.map { "Releases: \($0)\n" } ?? "")
            let e = try #require(Self.error(first + "\n" + Self.test + "Releases: \(b)\n"), "\(a ?? "all") / \(b)")
            #expect(e.location.line == first.split(separator: "\n").count + 2)
            #expect(e.message.contains("overlaps") && e.message.contains("t.conftest:1"))
        }
        for (a, b) in [(">=595", "<595"), (">595", "<=595"), ("590.48.01", "595.45.04"), (">=590 <595", ">=595")] {
            let catalog = try Self.load(Self.test + "Releases: \(a)\n\n" + Self.test + "Releases: \(b)\n")
            #expect(catalog.definitions.count == 2, "\(a) / \(b)")
        }
    }
}
