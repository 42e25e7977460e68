import Foundation
import KernelTree
import NVBuildSupport
import Testing

@testable import Conftest

/// A compile set-up on a real Debian kernel: its compiler, the conftest flags for the
/// fixture tree, and the preamble every probe gets.
struct KernelCompileSetup {
    var runner: CompileRunner
    var preamble: String
    var flags: [String]
    var scratch: String

    init(kernel: KernelTarget, name: String) async throws {
        let tree = try ConftestRequests.read(path: Repo.fixtureTree)
        let compiler = ConftestFlags.compilerCommand(kernel: kernel, override: nil, environment: [:])
        let facts = try await ConftestFlags.CompilerFacts.query(compiler: compiler)
        flags = ConftestFlags.baseFlags(kernel: kernel, compiler: facts, autoconf: ConftestFlags.autoconfPath(kernel: kernel), environment: [:])
            + ConftestFlags.kbuildFlags(tree: tree, kernel: kernel, environment: [:])
        scratch = try Repo.scratch(name)
        runner = CompileRunner(compiler: compiler, flags: flags, scratch: scratch)
        preamble = ProbeSource.preamble(headerPresenceLines: ["#define NV_GENERATED_AUTOCONF_H_PRESENT"])
    }

    var unionCompiler: UnionCompiler {
        UnionCompiler(runner: runner, preamble: preamble, includeDirectories: CompileRunner.bracketSearchOrder(flags),
                      systemDirectories: Set(CompileRunner.systemIncludeDirectories(flags)))
    }

    /// What the unit gives compiled on its own, as conftest.sh compiles it.
    func solo(_ unit: CompileUnit, id: String) async throws -> Bool {
        try await runner.compile(unit, preamble: preamble, id: id).compiled
    }
}

@Suite(.serialized) struct UnionCompileTests {
    static func call(_ test: String, includes: [String], function: String) -> CompileUnit {
        CompileUnit(test: test, probe: "call", includes: includes.map { "#include <\($0)>" }.joined(separator: "\n"),
                    body: "void nvbuild_conftest_\(test)(void) {\n    \(function)();\n}", files: [], shape: .call(function: function))
    }

    static func member(_ test: String, includes: [String], type: String, member: String) -> CompileUnit {
        CompileUnit(test: test, probe: "member", includes: includes.map { "#include <\($0)>" }.joined(separator: "\n"),
                    body: "int nvbuild_conftest_\(test)(void) {\n    return offsetof(\(type), \(member));\n}", files: [],
                    shape: .offsetof(type: type, member: member))
    }

    static func code(_ test: String, includes: [String], _ body: String) -> CompileUnit {
        CompileUnit(test: test, probe: "code", includes: includes.map { "#include <\($0)>" }.joined(separator: "\n"),
                    body: body, files: [], shape: .code)
    }

    /// Units whose outcome alone differs from their outcome next to another unit's headers.
    /// The union may keep only outcomes it can show; every kept one must equal the solo compile,
    /// and the traps must not be kept.
    @Test(arguments: ["6.1.", "6.12."])
    func unionKeepsOnlyOutcomesEqualToSoloCompiles(_ series: String) async throws {
        let kernel = try #require(Repo.kernels().first { $0.release.hasPrefix(series) })
        let setup = try await KernelCompileSetup(kernel: kernel, name: "union")
        defer { try? FileManager.default.removeItem(atPath: setup.scratch) }
        let units = [
            // kmalloc is declared by linux/slab.h, which only another unit includes: alone the
            // call is an implicit declaration and compiles; in the union it is rejected.
            Self.call("trap_call", includes: ["linux/types.h"], function: "kmalloc"),
            Self.call("slab_call", includes: ["linux/slab.h"], function: "kfree"),
            // struct page is incomplete with linux/types.h alone, complete with linux/mm_types.h.
            Self.member("trap_member", includes: ["linux/types.h"], type: "struct page", member: "flags"),
            Self.member("page_member", includes: ["linux/mm_types.h"], type: "struct page", member: "flags"),
            Self.member("page_missing", includes: ["linux/mm_types.h"], type: "struct page", member: "nvbuild_no_such_member"),
            // A macro only the other unit's headers define.
            Self.code("trap_macro", includes: ["linux/types.h"], "int nvb_trap_macro = PAGE_SHIFT;"),
            Self.code("page_shift", includes: ["linux/mm.h"], "int nvb_page_shift = PAGE_SHIFT;"),
            Self.code("list_code", includes: ["linux/list.h"], "void nvb_list(struct list_head *h) {\n    INIT_LIST_HEAD(h);\n}"),
            Self.call("list_call", includes: ["linux/list.h"], function: "list_add"),
            Self.call("nowhere", includes: ["linux/list.h"], function: "nvbuild_function_no_kernel_has"),
        ]
        let kept = try await setup.unionCompiler.compile(units)
        for (i, result) in kept {
            let alone = try await setup.solo(units[i], id: "solo-\(i)")
            #expect(result.compiled == alone, "\(units[i].test): union says \(result.compiled), alone \(alone)")
            #expect(!result.dependencies.isEmpty, "\(units[i].test) keeps the files its outcome rests on")
        }
        for trap in ["trap_call", "trap_member", "trap_macro"] {
            let index = try #require(units.firstIndex { $0.test == trap })
            #expect(kept[index] == nil, "\(trap) depends on headers it does not include and must be compiled alone")
        }
        // The union is worth having: the provable ones are kept.
        for name in ["slab_call", "page_member", "page_missing", "page_shift", "list_code", "list_call", "nowhere"] {
            let index = try #require(units.firstIndex { $0.test == name })
            #expect(kept[index] != nil, "\(name) only uses what its own headers declare")
        }
    }

    /// Two probes of one test (or any two defining the same name) never share a unit, and
    /// headers that cannot be combined (the compiler's stdint.h with the kernel's types) are kept apart.
    @Test func conflictingUnitsAreSeparatedAndStillExact() async throws {
        let kernel = try #require(Repo.kernels().first { $0.release.hasPrefix("6.1.") })
        let setup = try await KernelCompileSetup(kernel: kernel, name: "union-conflict")
        defer { try? FileManager.default.removeItem(atPath: setup.scratch) }
        let units = [
            Self.code("same", includes: ["linux/list.h"], "int nvb_same(struct list_head *h) { return h != 0; }"),
            Self.code("same_other", includes: ["linux/list.h"], "long nvb_same(struct list_head *h) { return 0; }"),
            Self.code("stdint", includes: ["stdint.h"], "uint32_t nvb_width = 32;"),
            Self.code("stdint_too", includes: ["stdint.h"], "uint64_t nvb_wide = 64;"),
            Self.call("list_call", includes: ["linux/list.h"], function: "list_del"),
        ]
        let kept = try await setup.unionCompiler.compile(units)
        for (i, result) in kept {
            let alone = try await setup.solo(units[i], id: "solo-\(i)")
            #expect(result.compiled == alone, "\(units[i].test)")
        }
        #expect(kept[0]?.compiled == true, "nvb_same compiles; the other definition of it is not in its unit")
        #expect(kept[1] == nil || kept[1]?.compiled == true)
        #expect(kept[2]?.compiled == true && kept[3]?.compiled == true, "stdint.h probes share a unit of their own")
    }

    /// A probe that leaves a brace open swallows the probes after it: nothing in that unit
    /// may be attributed, so nothing from it is kept; a probe with a syntax error fails alone.
    @Test func brokenProbesNeverDecideOthers() async throws {
        let kernel = try #require(Repo.kernels().first { $0.release.hasPrefix("6.1.") })
        let setup = try await KernelCompileSetup(kernel: kernel, name: "union-broken")
        defer { try? FileManager.default.removeItem(atPath: setup.scratch) }
        let open = [
            Self.code("fine", includes: ["linux/list.h"], "int nvb_fine(void) { return 1; }"),
            Self.code("open_brace", includes: ["linux/list.h"], "void nvb_open(void) {\n    int x = 0;"),
            Self.code("after", includes: ["linux/list.h"], "int nvb_after(void) { return 2; }"),
        ]
        #expect(try await setup.unionCompiler.compile(open).isEmpty, "an unclosed brace voids the whole unit")

        let syntax = [
            Self.code("fine", includes: ["linux/list.h"], "int nvb_fine(void) { return 1; }"),
            Self.code("bad", includes: ["linux/list.h"], "int nvb_bad(void) { return 1 +; }"),
            Self.code("after", includes: ["linux/list.h"], "int nvb_after(void) { return 2; }"),
        ]
        let kept = try await setup.unionCompiler.compile(syntax)
        for (i, result) in kept {
            let alone = try await setup.solo(syntax[i], id: "solo-\(i)")
            #expect(result.compiled == alone, "\(syntax[i].test)")
        }
        #expect(kept[1]?.compiled == false && kept[0]?.compiled == true && kept[2]?.compiled == true)
    }
}

@Suite struct PreprocessedUnitTests {
    /// The include graph and declarations read from real preprocessor output.
    @Test func readsIncludeGraphAndDeclarations() async throws {
        let kernel = try #require(Repo.kernels().first { $0.release.hasPrefix("6.1.") })
        let setup = try await KernelCompileSetup(kernel: kernel, name: "preprocessed")
        defer { try? FileManager.default.removeItem(atPath: setup.scratch) }
        // linux/list.h includes linux/types.h, already included: a guard-skipped include.
        let source = setup.preamble + "#include <linux/types.h>\n#include <linux/list.h>\nint nvb_x = LIST_POISON_PLACEHOLDER;\n"
        let text = try #require(try await setup.runner.preprocess(id: "pp", source: source))
        let unit = PreprocessedUnit.parse(text, includeDirectories: CompileRunner.bracketSearchOrder(setup.flags)) { tokens in
            Set(tokens.map(\.name)).union(["list_add", "list_head", "INIT_LIST_HEAD", "next", "nvbuild_absent_name"])
        }
        func file(_ suffix: String) throws -> Int { try #require(unit.paths.firstIndex { $0.hasSuffix(suffix) }, "\(suffix) was read") }
        let types = try file("/include/linux/types.h")
        let list = try file("/include/linux/list.h")
        #expect(unit.edges[list].contains(types), "list.h's include of types.h is resolved although the guard skipped it")
        #expect(unit.mainIncludes.compactMap(\.file).contains(list))
        let (closure, complete) = unit.closure(from: [list])
        #expect(complete && closure.contains(types))

        let facts = unit.facts
        #expect(facts["list_add"]?.ordinary.contains(list) == true, "list_add is a function of list.h")
        #expect(facts["list_head"]?.tagDefined.contains(types) == true, "struct list_head is defined in types.h")
        #expect(facts["INIT_LIST_HEAD"]?.ordinary.contains(list) == true || facts["INIT_LIST_HEAD"]?.macro.contains(list) == true)
        #expect(facts["next"]?.member.contains(types) == true, "next is a member of struct list_head")
        #expect(facts["nvbuild_absent_name"]?.mentioned.isEmpty == true)
        #expect(unit.mainTokens.contains { $0.name == "LIST_POISON_PLACEHOLDER" })
    }

    /// The declaration reader on C shapes headers use.
    @Test func declarationShapes() {
        let text = """
            struct outer { int a; struct inner { long b; } in; void (*callback)(int c); unsigned d:3; };
            typedef struct { int e; } anon_t;
            typedef int (*handler_t)(void *f);
            enum colour { RED, GREEN = 2, BLUE };
            extern int g __attribute__((aligned(8))), h[4];
            static inline int fn(struct outer *o) { int local = 0; return local; }
            struct forward;
            int (fn2)(int p);
            const struct table { int q; } table_value = { .q = 1 };
            """
        let wanted = ["outer", "a", "inner", "b", "in", "callback", "c", "d", "e", "anon_t", "handler_t", "f", "colour", "RED",
                      "GREEN", "BLUE", "g", "h", "fn", "o", "local", "forward", "fn2", "p", "table", "q", "table_value"]
        let (table, names) = DeclarationParser.lookupTable(wanted)
        #expect(names == wanted)
        var parser = DeclarationParser()
        var found: [String: Set<String>] = [:]
        let bytes = Array(text.utf8)
        bytes.withUnsafeBufferPointer { buf in
            var tokenizer = Tokenizer(buf: buf, position: 0, end: buf.count)
            while let token = tokenizer.next() {
                let piece = DeclarationParser.piece(token, in: buf, table: table)
                parser.feed(piece, file: 0) { kind, name, _ in found["\(kind)", default: []].insert(wanted[name]) }
            }
        }
        #expect(found["member"] == ["a", "b", "in", "callback", "d", "e", "q"])
        #expect(found["ordinary"] == ["anon_t", "handler_t", "RED", "GREEN", "BLUE", "g", "h", "fn", "fn2", "table_value"])
        #expect(found["tagDefined"] == ["outer", "inner", "colour", "table"])
        #expect(found["tagDeclared"]?.contains("forward") == true)
        #expect(found["array"] == ["h"])
    }

    @Test func rawShapeSeparatesDefinitionsLocalsAndMembers() {
        let shape = RawShape("""
            typeof(foo) nvb_alias;
            int nvb_fn(struct drm_device *dev, int count) {
                struct hdr_output_metadata meta;
                (void)dev->driver;
                return count + (int)sizeof(meta) + kernel_value;
            }
            """)
        #expect(shape.defined == ["nvb_alias", "nvb_fn"])
        #expect(shape.locals == ["dev", "count", "meta"])
        #expect(shape.memberRefs == ["driver"])
        #expect(shape.identifiers.isSuperset(of: ["foo", "drm_device", "hdr_output_metadata", "kernel_value"]))
    }
}
