import Foundation
import KernelTree
import NVBuildSupport
import TestSupport
import Testing

@testable import ModuleGraph

/// The Debian kernels the set-up installs, with their module trees.
enum InstalledTrees {
    /// The standard-flavour kernels (the scenarios, ext4 as a module and its dependencies,
    /// are facts about it): the ones setup installed, and any other with an image. A
    /// standard kernel without its image stays in the list so its tests say so.
    static var releases: [String] {
        let withImages = KernelDiscovery().installedKernels()
            .filter { !$0.release.contains("-rt-") && !$0.release.contains("-cloud-") && InstalledKernels.imageProblem($0.release) == nil }
            .map(\.release)
        return InstalledKernels.standard + withImages.filter { !InstalledKernels.standard.contains($0) }
    }

    /// The first release, whose image must be installed.
    static func first() throws -> String {
        let release = try #require(releases.first, "no standard kernel is installed: run scripts/setup")
        try InstalledKernels.requireImage(release)
        return release
    }

    /// Every module name of modules.dep and modules.builtin, sorted.
    static func moduleNames(release: String) throws -> [String] {
        try InstalledKernels.requireImage(release)
        let directory = "/lib/modules/\(release)"
        var names: Set<String> = []
        for line in try String(contentsOfFile: directory + "/modules.dep", encoding: .utf8).split(separator: "\n") {
            names.insert(baseName(String(line.prefix { $0 != ":" })))
        }
        for line in try String(contentsOfFile: directory + "/modules.builtin", encoding: .utf8).split(separator: "\n") {
            names.insert(baseName(String(line)))
        }
        return names.sorted()
    }

    static func baseName(_ path: String) -> String {
        var name = String(path.split(separator: "/").last ?? "")
        for suffix in [".xz", ".zst", ".gz", ".ko"] where name.hasSuffix(suffix) { name.removeLast(suffix.count) }
        return name
    }
}

@Suite struct LoadOrderTests {
    /// A deterministic sample (every k-th sorted name, at least 300) per kernel,
    /// compared byte for byte with modprobe run on the same tree without configuration.
    @Test(arguments: InstalledTrees.releases)
    func matchesModprobeShowDepends(release: String) async throws {
        let names = try InstalledTrees.moduleNames(release: release)
        try #require(names.count > 1000, "the image package of \(release) should ship thousands of modules")
        let stride = max(1, names.count / 320)
        let sample = Swift.stride(from: 0, to: names.count, by: stride).map { names[$0] }
        #expect(sample.count >= 300)

        let tree = try ModuleTree(moduleDirectory: "/lib/modules/\(release)")
        let listings = tree.dependencyListings(for: sample)
        var identical = 0
        for listing in listings {
            let reference = try await ProcessRunner().run(
                ["modprobe", "-C", "/dev/null", "--show-depends", "-S", release, listing.argument])
            let ours = listing.lines.map { $0 + "\n" }.joined()
            #expect(ours == reference.standardOutput, "\(release) \(listing.argument)")
            #expect((listing.error == nil) == reference.succeeded, "\(release) \(listing.argument)")
            if ours == reference.standardOutput { identical += 1 }
        }
        #expect(identical == sample.count)
    }

    @Test func unknownNameIsReported() throws {
        let release = try InstalledTrees.first()
        let tree = try ModuleTree(moduleDirectory: "/lib/modules/\(release)")
        let listing = try #require(tree.dependencyListings(for: ["no_such_module_xyz"]).first)
        #expect(listing.actions.isEmpty)
        #expect(listing.error == "Module no_such_module_xyz not found in directory /lib/modules/\(release)")
    }

    @Test func configurationAppliesOnlyWhenNamed() throws {
        // A modprobe.d directory of the test's own, not the host's, gives bonding options.
        let directory = FileManager.default.temporaryDirectory.path + "/nvbuild-modprobe-d-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "# written by LoadOrderTests\noptions bonding max_bonds=0 miimon=100\n"
            .write(toFile: directory + "/bonding.conf", atomically: true, encoding: .utf8)
        let release = try InstalledTrees.first()
        let bare = try ModuleTree(moduleDirectory: "/lib/modules/\(release)")
        let configured = try ModuleTree(moduleDirectory: "/lib/modules/\(release)", configDirectories: [directory])
        let plain = try #require(bare.dependencyListings(for: ["bonding"]).first?.lines.last)
        let withOptions = try #require(configured.dependencyListings(for: ["bonding"]).first?.lines.last)
        #expect(plain.hasPrefix("insmod ") && plain.hasSuffix(" "))
        #expect(!plain.contains("max_bonds"))
        #expect(withOptions == plain + "max_bonds=0 miimon=100 ")
    }
}

/// A FIFO named like a module is refused by its stat; libkmod would block reading it.
@Suite struct NonRegularModulePathTests {
    @Test(arguments: InstalledTrees.releases.prefix(1))
    func fifoArgumentIsRefused(release: String) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nvbuild-order-fifo-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("pipe.ko").path
        #expect(mkfifo(path, 0o600) == 0)
        let tree = try ModuleTree(moduleDirectory: "/lib/modules/\(release)")
        let listing = try #require(tree.dependencyListings(for: [path]).first)
        #expect(listing.error == "\(path): not a regular file; pass a .ko, .ko.xz, .ko.zst or .ko.gz file")
        #expect(listing.actions.isEmpty)
    }
}
