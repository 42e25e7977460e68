@testable import Conftest
import Foundation
import NVBuildSupport
import Testing

/// Scripts shaped like NVIDIA's conftest.sh, written here: a compile_test function whose
/// `case "$1"` has one arm per test.
enum Scripts {
    static func script(arms: String, helpers: String = defaultHelper) -> String {
        """
        #!/bin/sh
        CC="$1"
        \(helpers)
        compile_test() {
            case "$1" in
        \(arms)
                *)
                    echo "Error: unknown conftest '$1' requested" >&2
                    exit 1
                ;;
            esac
        }

        case "$5" in
            compile_tests)
                compile_test "$7"
            ;;
        esac

        """
    }

    static let defaultHelper = """
        check_it() {
            echo "$1" > conftest$$.c
            $CC -c conftest$$.c && echo "#define $2" || echo "#undef $2"
        }
        """

    static let memberArm = """
                alpha_has_beta)
                    #
                    # Whether struct alpha has beta.
                    #
                    CODE="
                    #include <linux/alpha.h>
                    int conftest_alpha(void) {
                        return offsetof(struct alpha, beta);
                    }"

                    check_it "$CODE" "NV_ALPHA_HAS_BETA"
                ;;

        """

    static func arms(_ text: String) throws -> ConftestArms {
        try #require(try ConftestArms.parse(Array(text.utf8), path: "conftest.sh"))
    }

    static func fingerprint(_ text: String, _ test: String) throws -> String {
        try #require(try arms(text).arm(for: test)).fingerprint
    }
}

@Suite struct ConftestArmsTests {
    @Test func readsArmsWithPatternsAndLines() throws {
        let text = Scripts.script(arms: Scripts.memberArm + """
                    gamma|delta_*)
                        echo "#define NV_GAMMA" # a trailing comment
                    ;;

            """)
        let arms = try Scripts.arms(text)
        #expect(arms.arms.map(\.patterns) == [["alpha_has_beta"], ["gamma", "delta_*"]])
        let alpha = try #require(arms.arm(for: "alpha_has_beta"))
        #expect(text.split(separator: "\n", omittingEmptySubsequences: false)[alpha.line - 1].contains("alpha_has_beta)"))
        #expect(arms.arm(for: "delta_x")?.patterns == ["gamma", "delta_*"])
        #expect(arms.arm(for: "gamma")?.patterns == ["gamma", "delta_*"])
        // The default arm answers nothing: such a name has no arm.
        #expect(arms.arm(for: "omega") == nil)
        #expect(arms.arm(for: "delta_") != nil)
    }

    @Test func commentsAndIndentationDoNotChangeTheFingerprint() throws {
        let base = try Scripts.fingerprint(Scripts.script(arms: Scripts.memberArm), "alpha_has_beta")
        let reworded = Scripts.memberArm
            .replacingOccurrences(of: "# Whether struct alpha has beta.", with: "# Added by commit 0123abcd (\"alpha: add beta\") in v6.1.")
            .replacingOccurrences(of: "            check_it", with: "\tcheck_it   ")
            .replacingOccurrences(of: "                return offsetof", with: "  return offsetof")
        #expect(try Scripts.fingerprint(Scripts.script(arms: reworded), "alpha_has_beta") == base)
        let blankLines = Scripts.memberArm.replacingOccurrences(of: "\n            check_it", with: "\n\n\n            check_it")
        #expect(try Scripts.fingerprint(Scripts.script(arms: blankLines), "alpha_has_beta") == base)
    }

    @Test func whatChangesMeaningChangesTheFingerprint() throws {
        let script = Scripts.script(arms: Scripts.memberArm)
        let base = try Scripts.fingerprint(script, "alpha_has_beta")
        let changes = [
            ("#include <linux/alpha.h>", "#include <linux/alpha_types.h>"),  // a C preprocessor line inside the string
            ("struct alpha, beta", "struct alpha, gamma"),
            ("\"NV_ALPHA_HAS_BETA\"", "\"NV_ALPHA_HAS_BETA_PRESENT\""),
            ("check_it \"$CODE\"", "check_it  \"$CODE \""),  // blanks inside a string are kept
        ]
        for (old, new) in changes {
            let changed = script.replacingOccurrences(of: old, with: new)
            #expect(changed != script)
            #expect(try Scripts.fingerprint(changed, "alpha_has_beta") != base, "\(old) → \(new)")
        }
        // A helper the arm calls is part of what it does.
        let helper = Scripts.defaultHelper.replacingOccurrences(of: "echo \"#define $2\"", with: "echo \"#define $2 1\"")
        #expect(try Scripts.fingerprint(Scripts.script(arms: Scripts.memberArm, helpers: helper), "alpha_has_beta") != base)
    }

    @Test func nestedCaseQuotesAndHashesDoNotEndAnArm() throws {
        let arms = try Scripts.arms(Scripts.script(arms: """
                    first)
                        case "$ARCH" in
                            x86_64) echo "#define NV_FIRST_X86 ;;" ;;
                            *) echo '#undef NV_FIRST_X86 ;;' ;;
                        esac
                        VALUE=$(echo "a;;b" | cut -d';' -f1)
                    ;;

                    second)
                        echo "#define NV_SECOND"
                    ;;

            """))
        #expect(arms.arms.map(\.patterns) == [["first"], ["second"]])
        let first = try #require(arms.arm(for: "first"))
        #expect(first.normalised.contains("esac"))
        #expect(first.normalised.contains("VALUE=$(echo \"a;;b\" | cut -d';' -f1)"))
        #expect(!first.normalised.contains("NV_SECOND"))
    }

    @Test func aScriptWithoutCompileTestHasNoArms() throws {
        let loop = "#!/bin/sh\nfor name in \"$@\"; do\n    case $name in\n    a) echo x ;;\n    esac\ndone\n"
        #expect(try ConftestArms.parse(Array(loop.utf8), path: "conftest.sh") == nil)
        // The fixture's own conftest.sh is of that kind: its tree is matched by name.
        #expect(try ConftestArms.read(path: Repo.fixtureTree + "/conftest.sh") == nil)
        #expect(try ConftestRequests.read(path: Repo.fixtureTree).arms == nil)
    }

    @Test func shellPatterns() {
        #expect(ShellPattern.matches("is_export_symbol_present_*", "is_export_symbol_present_vma_start_write"))
        #expect(!ShellPattern.matches("is_export_symbol_present_*", "is_export_symbol_gpl_x"))
        #expect(ShellPattern.matches("a?c", "abc") && !ShellPattern.matches("a?c", "ac"))
        #expect(ShellPattern.matches("[ab]x", "bx") && !ShellPattern.matches("[!ab]x", "bx"))
        #expect(ShellPattern.matches("\"a*\"", "a*") && !ShellPattern.matches("\"a*\"", "ab"))
    }

    /// The arms fixture's catalog was verified against the fixture's arms: its Upstream:
    /// fingerprints are the ones nvbuild computes for them now.
    @Test func armsFixtureCatalogMatchesItsTree() throws {
        let tree = try ConftestRequests.read(path: Repo.armsTree)
        let arms = try #require(tree.arms)
        let catalog = try Catalog.load(directory: Repo.armsCatalog)
        #expect(tree.allTests.count == 3)
        for test in tree.allTests {
            let arm = try #require(arms.arm(for: test), "\(test) has no arm")
            let choice = catalog.choose(test, arms: arms, release: tree.driverVersion)
            #expect(choice.definition != nil, "\(test): arm \(arm.fingerprint) matches no definition; update \(Repo.armsCatalog) with nvbuild probe fingerprint --tree \(Repo.armsTree)")
        }
    }

    /// The shipped catalog: every definition records the arms it was verified against.
    @Test func everyShippedDefinitionHasUpstreamFingerprints() throws {
        for d in try Repo.catalog().definitions {
            #expect(!d.upstream.isEmpty, "\(d.location): \(d.name) has no Upstream:")
        }
    }
}

@Suite struct CatalogChoiceTests {
    static func catalog(_ text: String) throws -> Catalog { try CatalogRejectionTests.load(text) }

    @Test func fingerprintsDecideAndReleasesAreOnlyTheFallback() throws {
        let script = Scripts.script(arms: Scripts.memberArm)
        let arms = try Scripts.arms(script)
        let fingerprint = try #require(arms.arm(for: "alpha_has_beta")).fingerprint
        let old = "Test: alpha_has_beta\nCheck: member struct alpha.beta\nMacro: NV_ALPHA_HAS_BETA\nUpstream: 0123456789abcdef\nReleases: <2\nNote: n\n"
        let new = "Test: alpha_has_beta\nCheck: member struct alpha.beta\nMacro: NV_ALPHA_HAS_BETA\nUpstream: \(fingerprint)\nReleases: >=2\nNote: n\n"
        let catalog = try Self.catalog(old + "\n" + new)
        // With arms the fingerprint selects, whatever the release says.
        guard case .definition(let d, let arm) = catalog.choose("alpha_has_beta", arms: arms, release: "1.0") else {
            Issue.record("the matching definition was not chosen"); return
        }
        #expect(d.upstream == [fingerprint] && arm?.fingerprint == fingerprint)
        // Without arms, Releases: decides.
        #expect(catalog.choose("alpha_has_beta", arms: nil, release: "1.0").definition?.upstream == ["0123456789abcdef"])
        // A definition verified against other arms only: changed upstream.
        let stale = try Self.catalog(old)
        guard case .delegate(.changedUpstream, let arm2?, let candidates) = stale.choose("alpha_has_beta", arms: arms, release: nil) else {
            Issue.record("a stale definition was used"); return
        }
        #expect(arm2.fingerprint == fingerprint && candidates.count == 1)
        // Not in the catalog: unknown; not in conftest.sh: no arm.
        guard case .delegate(.unknown, _, _) = stale.choose("zeta", arms: try Scripts.arms(Scripts.script(arms: "        zeta)\n            echo z\n        ;;\n")), release: nil) else {
            Issue.record("an unknown test was not reported as unknown"); return
        }
        guard case .noArm = stale.choose("omega", arms: arms, release: nil) else {
            Issue.record("a test without an arm was not reported"); return
        }
    }

    @Test func upstreamFieldIsValidated() throws {
        let base = "Test: a\nCheck: function f\nMacro: M\nNote: n\n"
        #expect(CatalogRejectionTests.error(base + "Upstream: 12345\n")?.message.contains("not a fingerprint") == true)
        #expect(CatalogRejectionTests.error(base + "Upstream: 0123456789ABCDEF\n") != nil)
        let shared = CatalogRejectionTests.error(base + "Upstream: 0123456789abcdef\nReleases: <2\n\n" + base + "Upstream: 0123456789abcdef aaaaaaaaaaaaaaaa\nReleases: >=2\n")
        #expect(shared?.message.contains("may select one definition only") == true)
        let two = try Self.catalog(base + "Upstream:\n    0123456789abcdef\n    aaaaaaaaaaaaaaaa\n")
        #expect(two.definitions[0].upstream == ["0123456789abcdef", "aaaaaaaaaaaaaaaa"])
    }
}

/// The places NVIDIA's releases keep their lists, each in a small tree written here.
@Suite struct RequestLayoutTests {
    static func tree(_ files: [String: String]) throws -> String {
        let dir = try Repo.scratch("layout")
        for (path, text) in files {
            let full = dir + "/" + path
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: full, atomically: true, encoding: .utf8)
        }
        return dir
    }

    static let module = [
        "nvidia/nvidia.Kbuild": "NV_CONFTEST_FUNCTION_COMPILE_TESTS += f_one\ninclude $(src)/nvidia/more.mk\n",
        "nvidia/more.mk": "NV_CONFTEST_TYPE_COMPILE_TESTS += t_one \\\n  t_two\n",
    ]

    static func read(_ files: [String: String]) throws -> ConftestRequests {
        let dir = try tree(module.merging(files) { $1 })
        defer { try? FileManager.default.removeItem(atPath: dir) }
        return try ConftestRequests.read(path: dir)
    }

    static func failure(_ files: [String: String]) throws -> String {
        do {
            _ = try read(files)
            Issue.record("read an unreadable layout")
            return ""
        } catch let error as UserError {
            #expect(error.kind == .environment)
            return error.message
        }
    }

    @Test func requestsInFragmentsAndTheFilesTheyInclude() throws {
        let tree = try Self.read(["Kbuild": "include $(src)/header-presence-tests.mk\n", "header-presence-tests.mk": "NV_HEADER_PRESENCE_TESTS = a/b.h\n"])
        #expect(tree.requests[.functions] == ["f_one"])
        #expect(tree.requests[.types] == ["t_one", "t_two"])
    }

    /// 550.40 on: header-presence-tests.mk, included by the Kbuild.
    @Test func headerListInAnIncludedFile() throws {
        // A header named twice is tested once: the Kbuild's `cat $^` lists each part once.
        let tree = try Self.read(["Kbuild": "# conftest\ninclude $(src)/header-presence-tests.mk\n",
                                  "header-presence-tests.mk": "NV_HEADER_PRESENCE_TESTS = \\\n  asm/one.h \\\n  linux/two.h \\\n  asm/one.h\n"])
        #expect(tree.headerPresenceTests == ["asm/one.h", "linux/two.h"])
        guard case .includedFile(let path) = tree.headerList else { Issue.record("\(tree.headerList)"); return }
        #expect(path.hasSuffix("/header-presence-tests.mk") && tree.headerList.hasParts)
    }

    /// 515.49.18 … 545: the list in the Kbuild itself.
    @Test func headerListInTheKbuild() throws {
        let tree = try Self.read(["Kbuild": "NV_HEADER_PRESENCE_TESTS = \\\n linux/three.h \\\n linux/four.h\n\nNV_HEADER_PRESENCE_PART = $(addprefix x,$(1))\n"])
        #expect(tree.headerPresenceTests == ["linux/three.h", "linux/four.h"])
        guard case .kbuild = tree.headerList else { Issue.record("\(tree.headerList)"); return }
    }

    /// 515.43 … 515.65: conftest.sh's test_headers lists them; the Kbuild runs it once.
    @Test func headerListInConftestScript() throws {
        let script = "#!/bin/sh\ntest_headers() {\n    FILES=\"linux/five.h\"\n    FILES=\"$FILES linux/six.h\"\n\n    FILES=\"$FILES asm/seven.h\"\n    check_all $FILES\n}\n"
        let tree = try Self.read(["Kbuild": "headers.h:\n\t$(NV_CONFTEST_CMD) test_kernel_headers '$(CFLAGS)' > $@\n", "conftest.sh": script])
        #expect(tree.headerPresenceTests == ["linux/five.h", "linux/six.h", "asm/seven.h"])
        guard case .conftestScript = tree.headerList else { Issue.record("\(tree.headerList)"); return }
        #expect(!tree.headerList.hasParts)
    }

    @Test func aListWhereNoneCanBeReadIsAnErrorNamingTheFile() throws {
        #expect(try Self.failure(["Kbuild": "include $(src)/header-presence-tests.mk\n", "header-presence-tests.mk": "NV_HEADER_PRESENCE_TESTS =\n"])
            .contains("/header-presence-tests.mk"))
        #expect(try Self.failure(["Kbuild": "include $(src)/header-presence-tests.mk\n"]).contains("/header-presence-tests.mk: not readable"))
        #expect(try Self.failure(["Kbuild": "$(foreach h,$(NV_HEADER_PRESENCE_TESTS),$(eval $(call CHECK,$(h))))\n"]).contains("/Kbuild"))
        #expect(try Self.failure(["Kbuild": "x:\n\t$(CMD) test_kernel_headers > $@\n", "conftest.sh": "#!/bin/sh\ntest_headers() {\n    check_all\n}\n"])
            .contains("/conftest.sh"))
        let noRequests = try Self.failure(["Kbuild": "include $(src)/header-presence-tests.mk\n", "header-presence-tests.mk": "NV_HEADER_PRESENCE_TESTS = a.h\n",
                                           "nvidia/nvidia.Kbuild": "obj-m += nvidia.o\n", "nvidia/more.mk": ""])
        #expect(noRequests.contains("/nvidia/nvidia.Kbuild"))
    }
}
