import Foundation
import NVBuildSupport
import TestSupport
import Testing

@testable import ModuleGraph

/// Builds index files by hand, in depmod's layout, for shapes depmod never writes.
struct IndexBuilder {
    var bytes: [UInt8] = []

    init(root: UInt32) {
        append(ModuleIndex.magic)
        append(0x0002_0001)
        append(root)
    }

    mutating func append(_ word: UInt32) { bytes += withUnsafeBytes(of: word.bigEndian, Array.init) }
    mutating func append(string: String) { bytes += Array(string.utf8) + [0] }
    var offset: UInt32 { UInt32(bytes.count) }

    func validate() throws(ModuleIndex.Corruption) -> ModuleIndex.Summary {
        let result = bytes.withUnsafeBytes { buffer in Result { () throws(ModuleIndex.Corruption) in try ModuleIndex.validate(buffer, path: "test.bin") } }
        return try result.get()
    }
}

@Suite struct ModuleIndexTests {
    @Test(arguments: InstalledTrees.releases)
    func installedIndexesAreSound(release: String) throws {
        try InstalledKernels.requireImage(release)
        let directory = "/lib/modules/\(release)"
        let start = ContinuousClock.now
        #expect(try ModuleIndex.validateTree(directory).isEmpty)
        let elapsed = ContinuousClock.now - start
        for name in ["modules.dep.bin", "modules.alias.bin", "modules.symbols.bin"] {
            let summary = try ModuleIndex.validate(path: directory + "/" + name)
            #expect(summary.nodes > 1000 && summary.values > 1000, "\(name): \(summary)")
        }
        // Every module of modules.dep is a value of modules.dep.bin.
        let modules = try String(contentsOfFile: directory + "/modules.dep", encoding: .utf8).split(separator: "\n").count
        #expect(try ModuleIndex.validate(path: directory + "/modules.dep.bin").values == modules)
        print("validated the indexes of \(release) in \(elapsed)")
    }

    @Test func depmodCommandNamesRootAndRelease() throws {
        let release = try InstalledTrees.first()
        #expect(ModuleIndex.depmodCommand("/lib/modules/\(release)") == "depmod -b / \(release)")
        #expect(ModuleIndex.depmodCommand("/tmp/x/lib/modules/\(release)/") == "depmod -b /tmp/x \(release)")
        #expect(ModuleIndex.depmodCommand("/tmp/elsewhere").contains("ROOT/lib/modules/RELEASE"))
    }

    /// depmod's own small index: sound whole, and every shorter prefix refused (the last
    /// byte written belongs to a reachable node).
    @Test func everyTruncationOfARealIndexIsRefused() throws {
        let release = try InstalledTrees.first()
        let tree = try ModuleTreeCopy.make(release: release, modules: ["ext4"], reindex: true)
        defer { tree.remove() }
        for name in ["modules.dep.bin", "modules.alias.bin", "modules.symbols.bin"] {
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: tree.directory + "/" + name)))
            let whole = try bytes.withUnsafeBytes { try ModuleIndex.validate($0, path: name) }
            #expect(whole.values > 0)
            for length in 0..<bytes.count {
                #expect(throws: ModuleIndex.Corruption.self, "\(name) cut to \(length) bytes") {
                    try bytes.prefix(length).withUnsafeBytes { try ModuleIndex.validate($0, path: name) }
                }
            }
        }
    }

    @Test func headerChecks() throws {
        var index = IndexBuilder(root: 12 | ModuleIndex.valuesFlag)
        index.append(1)
        index.append(0)
        index.append(string: "kernel/a.ko:")
        #expect(try index.validate() == ModuleIndex.Summary(nodes: 1, values: 1))

        var badMagic = index
        badMagic.bytes[0] ^= 0x01
        #expect(throws: ModuleIndex.Corruption(path: "test.bin", problem: "not a module index (magic 0xB107F457, expected 0xB007F457)")) {
            try badMagic.validate()
        }
        var badVersion = index
        badVersion.bytes[5] = 3
        #expect(throws: ModuleIndex.Corruption.self) { try badVersion.validate() }
        var minorVersion = index  // libkmod reads any minor version of format 2
        minorVersion.bytes[7] = 9
        #expect(try minorVersion.validate().values == 1)
    }

    @Test func linksOutsideTheFileCyclesAndWideTablesAreRefused() throws {
        func problem(_ builder: IndexBuilder) -> String? {
            do { _ = try builder.validate(); return nil } catch { return error.problem }
        }
        // Root links to a node past the end.
        #expect(problem(IndexBuilder(root: 4096 | ModuleIndex.valuesFlag))?.contains("outside") == true)
        // Root pointing into the header.
        #expect(problem(IndexBuilder(root: 4 | ModuleIndex.valuesFlag))?.contains("outside") == true)
        // A child that links back to the root.
        var cycle = IndexBuilder(root: 12 | ModuleIndex.childrenFlag)
        cycle.bytes += [UInt8(ascii: "a"), UInt8(ascii: "a")]
        cycle.append(12 | ModuleIndex.childrenFlag)
        #expect(problem(cycle)?.contains("linked twice") == true)
        // 200 children: wider than libkmod's 128-entry table.
        var wide = IndexBuilder(root: 12 | ModuleIndex.childrenFlag)
        wide.bytes += [0, 199]
        for _ in 0...199 { wide.append(0) }
        #expect(problem(wide)?.contains("7-bit ASCII") == true)
        // An unknown flag bit.
        #expect(problem(IndexBuilder(root: 12 | 0x1000_0000))?.contains("unknown flag") == true)
        // A value count the file cannot hold.
        var values = IndexBuilder(root: 12 | ModuleIndex.valuesFlag)
        values.append(0x7FFF_FFFF)
        #expect(problem(values)?.contains("claims") == true)
        // A prefix without its NUL.
        var prefix = IndexBuilder(root: 12 | ModuleIndex.prefixFlag)
        prefix.bytes += Array("abc".utf8)
        #expect(problem(prefix)?.contains("prefix") == true)
        // A chain of single-child nodes deeper than any key: libkmod would recurse that deep.
        var deep = IndexBuilder(root: 12 | ModuleIndex.childrenFlag)
        for _ in 0..<5000 {
            let next = deep.offset + 6
            deep.bytes += [UInt8(ascii: "a"), UInt8(ascii: "a")]
            deep.append(next | ModuleIndex.childrenFlag)
        }
        deep.bytes += [UInt8(ascii: "a"), UInt8(ascii: "a")]
        deep.append(0)
        #expect(problem(deep)?.contains("beyond any real index") == true)
    }

    @Test func treeValidationNamesTheFileAndDepmod() throws {
        let release = try InstalledTrees.first()
        let tree = try ModuleTreeCopy.make(release: release, modules: ["ext4"], reindex: true)
        defer { tree.remove() }
        #expect(try ModuleIndex.validateTree(tree.directory).isEmpty)
        let symbols = tree.directory + "/modules.symbols.bin"
        try Data([0xB0, 0x07, 0xF4, 0x57, 0, 2, 0, 1, 0x40, 0, 0x10, 0]).write(to: URL(fileURLWithPath: symbols))
        do {
            _ = try ModuleIndex.validateTree(tree.directory)
            Issue.record("a corrupt modules.symbols.bin passed")
        } catch {
            #expect(error.kind == .environment)
            #expect(error.message.hasPrefix(symbols + ": corrupt module index: "))
            #expect(error.message.hasSuffix("rewrite it with depmod -b \(tree.root) \(release)"))
            #expect(!error.message.contains("\n"))
        }
        try FileManager.default.removeItem(atPath: symbols)
        let warnings = try ModuleIndex.validateTree(tree.directory)
        #expect(warnings.map(\.file) == [symbols])
        try FileManager.default.removeItem(atPath: tree.directory + "/modules.dep.bin")
        #expect(throws: UserError.self) { _ = try ModuleIndex.validateTree(tree.directory) }
        // A FIFO in place of an index is refused from its stat, not opened.
        #expect(mkfifo(tree.directory + "/modules.dep.bin", 0o600) == 0)
        #expect(throws: UserError.self) { _ = try ModuleIndex.validateTree(tree.directory) }
    }
}

/// Seeded mutations of real indexes (depmod's, for a few modules, and one installed
/// kernel's modules.dep.bin): the validator answers every one without crashing, and the
/// mutants it accepts are then read by libkmod in this process, which must not crash either.
@Suite struct ModuleIndexFuzzTests {
    /// The shared format-blind damage, or damage aimed at what the index format trusts:
    /// a big-endian node link (outside, at the edge, any flags) or strings losing their NULs.
    static func mutate(_ original: [UInt8], using random: inout SeededGenerator) -> [UInt8] {
        var bytes = original
        guard !bytes.isEmpty else { return Mutation.damage(bytes, using: &random) }
        switch Int.random(in: 0..<4, using: &random) {
        case 0:
            let size = UInt64(bytes.count)
            let flags = UInt64.random(in: 0...15, using: &random) << 28
            let value = [0, 0xFFFF_FFFF, size, size - 1, flags | size, flags | UInt64.random(in: 0..<size, using: &random), flags | 12]
                .randomElement(using: &random)!
            Mutation.poke(&bytes, Int.random(in: 0..<bytes.count, using: &random), value, width: 4, bigEndian: true)
        case 1:
            let at = Int.random(in: 0..<bytes.count, using: &random)
            for index in at..<min(bytes.count, at + 256) where bytes[index] == 0 { bytes[index] = UInt8(ascii: "x") }
        default:
            bytes = Mutation.damage(bytes, using: &random)
        }
        return bytes
    }

    @Test func mutatedIndexesNeverCrash() throws {
        let release = try InstalledTrees.first()
        let tree = try ModuleTreeCopy.make(release: release, modules: ["ext4"], reindex: true)
        defer { tree.remove() }
        let names = ModuleIndex.fileNames
        var originals: [String: [UInt8]] = [:]
        for name in names { originals[name] = try [UInt8](Data(contentsOf: URL(fileURLWithPath: tree.directory + "/" + name))) }
        let lookups = ["ext4", "jbd2", "crc16", "mbcache", "fs-ext4", "symbol:jbd2_journal_start", "nonexistent"]

        var random = SeededGenerator(seed: 0x6E76_6275_696C_6421)
        var refused = 0, accepted = 0
        for round in 0..<400 {
            let name = names[round % names.count]
            let mutant = Self.mutate(originals[name]!, using: &random)
            let verdict = mutant.withUnsafeBytes { buffer -> ModuleIndex.Summary? in try? ModuleIndex.validate(buffer, path: name) }
            guard verdict != nil else { refused += 1; continue }
            accepted += 1
            // Accepted: libkmod must read it without harm.
            let path = tree.directory + "/" + name
            try Data(mutant).write(to: URL(fileURLWithPath: path))
            defer { try? Data(originals[name]!).write(to: URL(fileURLWithPath: path)) }
            let moduleTree = try ModuleTree(moduleDirectory: tree.directory)
            _ = moduleTree.dependencyListings(for: lookups)
        }
        // The mix exercises both sides.
        #expect(refused > 100 && accepted > 10, "refused \(refused), accepted \(accepted)")
        print("index fuzz: \(refused) refused, \(accepted) accepted and read by libkmod")
    }

    /// Mutations of a whole installed kernel's modules.dep.bin, validator only.
    @Test func mutatedInstalledIndexNeverCrashes() throws {
        let release = try InstalledTrees.first()
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: "/lib/modules/\(release)/modules.dep.bin")))
        var random = SeededGenerator(seed: 0x5EED_0000_0000_0017)
        var refused = 0
        for _ in 0..<30 {
            let mutant = Self.mutate(original, using: &random)
            if (mutant.withUnsafeBytes { try? ModuleIndex.validate($0, path: "modules.dep.bin") }) == nil { refused += 1 }
        }
        #expect(refused > 0)
    }
}
