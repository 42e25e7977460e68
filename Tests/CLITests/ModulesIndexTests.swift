import Foundation
import TestSupport
import Testing

/// `modules order` and `modules verify` on a copy of an installed module tree whose
/// indexes or files were damaged: exit 2 with one line naming the index and the depmod
/// run that rewrites it, never a crash inside libkmod; a missing dependency fails the order.
@Suite struct ModulesIndexTests {
    static func release() throws -> String {
        let release = try #require(InstalledKernels.standard.last, "no standard kernel is installed: run scripts/setup")
        try InstalledKernels.requireImage(release)
        return release
    }

    /// Both commands on `tree`, each checked for exit 2 and one stderr line naming `file`.
    static func expectIndexRefused(_ tree: ModuleTreeCopy, file: String, _ what: String) throws {
        for command in ["order", "verify"] {
            let run = try CLI.run(["modules", command, "--root", tree.root, "--kernel", tree.release, "ext4"])
            #expect(run.status == 2, "\(what), modules \(command): exit \(run.status)\n\(run.stderr)")
            let lines = run.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(what), modules \(command): \(run.stderr)")
            let line = String(lines.first ?? "")
            #expect(line.contains(tree.directory + "/" + file + ": corrupt module index"), "\(what): \(line)")
            #expect(line.hasSuffix("depmod -b \(tree.root) \(tree.release)"), "\(what): \(line)")
            #expect(run.stdout.isEmpty, "\(what): nothing is listed from a corrupt tree")
        }
    }

    @Test func truncatedDependencyIndex() throws {
        let tree = try ModuleTreeCopy.make(release: Self.release(), modules: ["ext4"])
        defer { tree.remove() }
        let path = tree.directory + "/modules.dep.bin"
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        // The sizes that crashed libkmod (SIGSEGV, stack smashing) before the check.
        for length in [1000, 5000, 11, 0] {
            try original.prefix(length).write(to: URL(fileURLWithPath: path))
            try Self.expectIndexRefused(tree, file: "modules.dep.bin", "modules.dep.bin cut to \(length) bytes")
        }
    }

    @Test func flippedAndOutOfRangeIndexes() throws {
        let tree = try ModuleTreeCopy.make(release: Self.release(), modules: ["ext4"])
        defer { tree.remove() }
        for file in ["modules.dep.bin", "modules.alias.bin", "modules.symbols.bin", "modules.builtin.bin"] {
            let path = tree.directory + "/" + file
            let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            var magic = original
            magic[1] ^= 0xFF
            var root = original  // the root node's offset past the end, flags kept
            let outside = UInt32(original.count + 4096)
            root[9] = UInt8(truncatingIfNeeded: outside >> 16) & 0x0F | (root[9] & 0xF0)
            root[10] = UInt8(truncatingIfNeeded: outside >> 8)
            root[11] = UInt8(truncatingIfNeeded: outside)
            for (bytes, what) in [(magic, "magic flipped"), (root, "root offset outside")] {
                try Data(bytes).write(to: URL(fileURLWithPath: path))
                try Self.expectIndexRefused(tree, file: file, "\(file): \(what)")
            }
            try Data(original).write(to: URL(fileURLWithPath: path))
        }
    }

    /// Garbage modules.alias.bin used to give a shorter order with exit 0.
    @Test func garbageAliasIndexIsAnErrorNotAShorterOrder() throws {
        let tree = try ModuleTreeCopy.make(release: Self.release(), modules: ["ext4"])
        defer { tree.remove() }
        let path = tree.directory + "/modules.alias.bin"
        let size = try Data(contentsOf: URL(fileURLWithPath: path)).count
        var state: UInt64 = 0x1234_5678_9ABC_DEF1
        var garbage = [UInt8](repeating: 0, count: size)
        for index in garbage.indices {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            garbage[index] = UInt8(truncatingIfNeeded: state >> 33)
        }
        try Data(garbage).write(to: URL(fileURLWithPath: path))
        try Self.expectIndexRefused(tree, file: "modules.alias.bin", "random modules.alias.bin")
        // The same garbage behind a valid header: the nodes are checked, not just the magic.
        garbage.replaceSubrange(0..<8, with: [0xB0, 0x07, 0xF4, 0x57, 0x00, 0x02, 0x00, 0x01])
        try Data(garbage).write(to: URL(fileURLWithPath: path))
        try Self.expectIndexRefused(tree, file: "modules.alias.bin", "garbage after a valid header")
    }

    @Test func deletedDependencyFailsTheOrderNamingIt() throws {
        let tree = try ModuleTreeCopy.make(release: Self.release(), modules: ["ext4"])
        defer { tree.remove() }
        let paths = try tree.modulePaths("ext4")
        try #require(paths.count >= 2, "ext4 has dependencies in modules.dep")
        let before = try CLI.run(["modules", "order", "--root", tree.root, "--kernel", tree.release, "ext4"])
        #expect(before.status == 0, "\(before.stderr)")
        // Soft dependencies (modules.softdep) join the order too: copy every file it loads.
        for line in before.stdout.split(separator: "\n") where line.hasPrefix("insmod \(tree.directory)/") {
            let path = line.dropFirst("insmod \(tree.directory)/".count).split(separator: " ")[0]
            try tree.addModuleFile(String(path))
        }
        let missing = tree.directory + "/" + paths[1]
        try FileManager.default.removeItem(atPath: missing)
        let order = try CLI.run(["modules", "order", "--root", tree.root, "--kernel", tree.release, "ext4"])
        #expect(order.status == 1, "exit \(order.status)")
        #expect(order.stderr.contains("\(missing): no such file or directory, but \(tree.directory)/modules.dep names it as a dependency"), "\(order.stderr)")
        #expect(order.stderr.split(separator: "\n").count == 1, "\(order.stderr)")
        // verify plans the same order: the missing dependency is a problem, exit 1.
        let verify = try CLI.run(["modules", "verify", "--root", tree.root, "--kernel", tree.release, "ext4"])
        #expect(verify.status == 1, "exit \(verify.status)\n\(verify.stderr)")
        #expect(verify.stderr.contains(missing), "\(verify.stderr)")
        // JSON carries it as a typed diagnostic.
        let json = try CLI.run(["modules", "order", "--json", "--root", tree.root, "--kernel", tree.release, "ext4"])
        let listings = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]] ?? []
        let diagnostics = listings.first?["diagnostics"] as? [[String: Any]] ?? []
        #expect(diagnostics.contains { $0["file"] as? String == missing && $0["severity"] as? String == "error" }, "\(json.stdout)")
    }

    /// A FIFO in place of an index or a module: refused from its stat, no hang.
    @Test func fifoIndexAndModuleAreRefusedWithoutBlocking() throws {
        let tree = try ModuleTreeCopy.make(release: Self.release(), modules: ["ext4"])
        defer { tree.remove() }
        let fifo = tree.directory + "/pipe.ko"
        #expect(mkfifo(fifo, 0o600) == 0)
        for command in ["order", "verify"] {
            let run = try CLI.run(["modules", command, "--root", tree.root, "--kernel", tree.release, fifo])
            #expect(run.status != 0 && run.status < 128, "modules \(command) on a FIFO: exit \(run.status)")
            #expect(run.stderr.contains("\(fifo): not a regular file"), "\(run.stderr)")
        }
        let inspect = try CLI.run(["inspect", fifo])
        #expect(inspect.status == 2 && inspect.stderr.contains("\(fifo): not a regular file"), "inspect: \(inspect.status) \(inspect.stderr)")
        let index = tree.directory + "/modules.symbols.bin"
        try FileManager.default.removeItem(atPath: index)
        #expect(mkfifo(index, 0o600) == 0)
        let run = try CLI.run(["modules", "order", "--root", tree.root, "--kernel", tree.release, "ext4"])
        #expect(run.status == 2 && run.stderr.contains("\(index): corrupt module index: not a regular file"), "\(run.status) \(run.stderr)")
    }
}
