import Foundation
import Kbuild
import KernelTree
import SourceTree
import Testing

/// The cores' make command as data, and the cache key's inputs.
@Suite struct CoreBuilderTests {
    static let fullTree = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().path + "/Fixtures/full-tree"

    @Test func makeCommandWritesIntoTheGivenOutputAndNamesTheCompiler() throws {
        let tree = try #require(try FullTree.detect(path: Self.fullTree))
        let core = try #require(tree.cores.first)
        let plain = CoreBuilder(cacheDirectory: "/c", jobs: 3)
        #expect(plain.makeCommand(for: core, tree: tree, outputDirectory: "/c/k/src_nvcore") == [
            "make", "-C", tree.root + "/src/nvcore", "-j3", "OUTPUTDIR=/c/k/src_nvcore", "OUTPUTDIR_ABSOLUTE=/c/k/src_nvcore",
        ])
        let ccache = CoreBuilder(cacheDirectory: "/c", jobs: 1, compiler: CompilerCommand(parsing: "ccache gcc-12"))
        #expect(ccache.makeCommand(for: core, tree: tree, outputDirectory: "/o").last == "CC=ccache gcc-12")
    }

    /// The key follows the cores' sources and compiler, not the Kbuild tree (which each
    /// kernel builds on its own) nor a launcher in front of the compiler.
    @Test func cacheKeyFollowsCoreSourcesOnly() async throws {
        let copy = FileManager.default.temporaryDirectory.path + "/nvbuild-corekey-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: copy) }
        try FileManager.default.copyItem(atPath: Self.fullTree, toPath: copy)
        let builder = CoreBuilder(cacheDirectory: copy + "/cache", jobs: 1, compiler: CompilerCommand(parsing: "gcc"))
        let before = try await builder.cacheKey(for: try #require(try FullTree.detect(path: copy)))

        try "// a comment\n".write(toFile: copy + "/kernel-open/nvcoreuser/extra.c", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: copy + "/src/nvcore/_out", withIntermediateDirectories: true)
        try "stale".write(toFile: copy + "/src/nvcore/_out/nvcore.o", atomically: true, encoding: .utf8)
        #expect(try await builder.cacheKey(for: try #require(try FullTree.detect(path: copy))) == before)
        let launched = CoreBuilder(cacheDirectory: copy + "/cache", jobs: 1, compiler: CompilerCommand(parsing: "ccache gcc"))
        #expect(try await launched.cacheKey(for: try #require(try FullTree.detect(path: copy))) != before,
                "CC differs on make's command line, so the key does")

        try "/* changed */\n".write(toFile: copy + "/src/nvcore/extra.h", atomically: true, encoding: .utf8)
        #expect(try await builder.cacheKey(for: try #require(try FullTree.detect(path: copy))) != before)
    }
}
