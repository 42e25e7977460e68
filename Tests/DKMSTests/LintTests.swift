import DKMS
import Foundation
import NVBuildSupport
import Testing

@Suite("dkms.conf lint")
struct LintTests {
    private func rules(_ file: String) throws -> [String: [Int]] {
        var result: [String: [Int]] = [:]
        for f in try DKMSLinter.lint(path: Fixtures.dkms(file)) { result[f.rule, default: []].append(f.line) }
        return result
    }

    @Test func cleanFileHasNoFindings() throws {
        #expect(try DKMSLinter.lint(path: Fixtures.dkms("clean-plain.conf")).isEmpty)
    }

    @Test func debianShapedFile() throws {
        let conf = try DKMSConf.read(path: Fixtures.dkms("debian-nvidia-current.conf"))
        #expect(conf.array("BUILT_MODULE_NAME").count == 5)
        #expect(conf.value("DEST_MODULE_NAME", index: 2) == "$PACKAGE_NAME-drm")
        // The only problem: the job count comes from a shell default-value operation.
        #expect(try rules("debian-nvidia-current.conf") == ["parameter-operation": [30]])
    }

    @Test func archShapedFile() throws {
        let findings = try DKMSLinter.lint(path: Fixtures.dkms("arch-nvidia-open.conf"))
        #expect(findings.map(\.rule) == ["command-substitution"])
        #expect(findings.first?.line == 9)
        #expect(findings.first?.message.contains("`nproc`") == true)
    }

    @Test func sloppyFile() throws {
        let r = try rules("sloppy.conf")
        #expect(r["misspelled-directive"] == [5, 10])
        #expect(r["index-gap"] == [8, 9])
        #expect(r["module-suffix"] == [8])
        #expect(r["dest-location"] == [9])
        #expect(r["make-rewritten"] == [11])
        #expect(r["missing-directive"] != nil)  // PACKAGE_VERSION, because of the typo
        let typo = try DKMSLinter.lint(path: Fixtures.dkms("sloppy.conf")).first { $0.line == 5 }
        #expect(typo?.fix == "did you mean PACKAGE_VERSION?")
        #expect(typo?.description.hasPrefix(Fixtures.dkms("sloppy.conf") + ":5: error:") == true)
    }

    @Test func doubleQuotedValuesKeepEscapesAndContinuations() {
        let conf = DKMSConf.parse("PACKAGE_NAME=\"a\\\"b\"\nPACKAGE_VERSION='1.0'  # trailing comment\nCLEAN=\"make \\\n clean\"\n")
        #expect(conf.value("PACKAGE_NAME") == "a\"b")
        #expect(conf.value("PACKAGE_VERSION") == "1.0")
        #expect(conf.value("CLEAN") == "make  clean")
        #expect(conf.statements.isEmpty && conf.syntaxErrors.isEmpty)
    }

    @Test func unterminatedQuoteIsASyntaxError() {
        let findings = DKMSLinter.lint(DKMSConf.parse("PACKAGE_NAME=\"x\nPACKAGE_VERSION=1\n"))
        #expect(findings.contains { $0.rule == "syntax" && $0.line == 1 })
    }

    static let hostile: [(file: String, rules: Set<String>)] = [
        ("hostile-substitution.conf", ["command-substitution"]),
        ("hostile-backtick.conf", ["command-substitution"]),
        ("hostile-statement.conf", ["not-an-assignment"]),
        ("hostile-redirect.conf", ["not-an-assignment"]),
        ("hostile-index.conf", ["parameter-operation", "non-literal-index"]),
        ("hostile-continuation.conf", ["not-an-assignment"]),
        ("hostile-eval.conf", ["command-substitution"]),
    ]

    /// Each hostile file names its own canary under /tmp. Linting must report the
    /// danger and never create the canary; sourcing a copy that points the canary
    /// into a private folder shows the file really is live.
    @Test(arguments: hostile.map(\.file))
    func hostileFileIsReportedAndNeverRun(file: String) async throws {
        let path = Fixtures.dkms(file)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let canaryName = "nvbuild-dkms-canary-" + file.dropFirst("hostile-".count).dropLast(".conf".count)
        let canary = "/tmp/" + canaryName
        #expect(text.contains(canary))
        try? FileManager.default.removeItem(atPath: canary)

        let findings = try DKMSLinter.lint(path: path)
        let expected = Self.hostile.first { $0.file == file }!.rules
        #expect(expected.isSubset(of: Set(findings.filter { $0.severity == .error }.map(\.rule))), "\(findings)")
        #expect(!FileManager.default.fileExists(atPath: canary))

        // Proof the fixture is hostile: the shell does create the (relocated) canary.
        let sandbox = try Fixtures.temporaryDirectory("canary")
        defer { try? FileManager.default.removeItem(atPath: sandbox) }
        let copy = "\(sandbox)/dkms.conf"
        try text.replacingOccurrences(of: canary, with: "\(sandbox)/\(canaryName)").write(toFile: copy, atomically: true, encoding: .utf8)
        if file == "hostile-eval.conf" {
            // dkms evals MAKE at build time; do what it does with the sourced value.
            try await Fixtures.run(["bash", "-c", ". \"$1\"; eval \"${MAKE[0]/#make/true}\"", "_", copy])
        } else {
            try await Fixtures.run(["bash", "-c", ". \"$1\"", "_", copy])
        }
        #expect(FileManager.default.fileExists(atPath: "\(sandbox)/\(canaryName)"))
        #expect(!FileManager.default.fileExists(atPath: canary))
    }

    /// Every hook DKMS runs is checked: an absolute path or one climbing out with `..` is an
    /// error on its line; a path that stays inside (even through `..`) is not.
    @Test(arguments: DKMSDirectives.hooks.sorted())
    func hookPathMustStayInThePackage(hook: String) {
        let head = "PACKAGE_NAME=\"p\"\nPACKAGE_VERSION=\"1\"\nBUILT_MODULE_NAME[0]=\"m\"\nDEST_MODULE_LOCATION[0]=\"/updates/dkms\"\n"
        for (value, flagged) in [("../../../../tmp/x.sh", true), ("/tmp/x.sh", true), ("scripts/../../x.sh", true),
                                 ("scripts/run.sh --quiet", false), ("scripts/../run.sh", false), ("./run.sh", false)] {
            let findings = DKMSLinter.lint(DKMSConf.parse(head + "\(hook)=\"\(value)\"\n")).filter { $0.rule == "hook-path" }
            #expect(findings.count == (flagged ? 1 : 0), "\(hook)=\(value): \(findings)")
            #expect(findings.allSatisfy { $0.severity == .error && $0.line == 5 })
        }
    }

    /// The hooks are the ones the installed dkms runs (`run_build_script <hook> ...` in its script).
    @Test func hooksAreTheOnesDKMSRuns() throws {
        let dkms = try #require(ProcessRunner.lookup("dkms"), "dkms is not installed: run scripts/setup")
        let script = try String(contentsOfFile: dkms, encoding: .utf8)
        var hooks: Set<String> = []
        for line in script.split(separator: "\n") {
            let words = line.split(separator: " ")
            if let i = words.firstIndex(of: "run_build_script"), i + 2 < words.count, words[i + 2].hasPrefix("\"$") {
                hooks.insert(words[i + 1].uppercased())
            }
        }
        #expect(!hooks.isEmpty)
        #expect(hooks == DKMSDirectives.hooks)
    }

    @Test func unknownVariableAndSpecialExpansions() {
        let conf = DKMSConf.parse("""
            PACKAGE_NAME="p"
            PACKAGE_VERSION="$HOME"
            BUILT_MODULE_NAME[0]="m$1"
            DEST_MODULE_LOCATION[0]="/updates/dkms"
            MAKE[0]="'make' -C ${kernel_source_dir} M=${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build"
            """)
        let findings = DKMSLinter.lint(conf)
        #expect(findings.map(\.rule) == ["unknown-variable", "unknown-variable"])
        #expect(findings.map(\.line) == [2, 3])
    }
}
