import Foundation
import NVBuildSupport
import TestSupport
import Testing

/// `modules try` with a zstd-compressed module. Neither Debian kernel unpacks zstd
/// itself (6.1 has no CONFIG_MODULE_DECOMPRESS, 6.12 decompresses xz only), so the
/// module reaches the guest only if nvbuild decompresses it first.
@Suite(.serialized) struct ModulesTryTests {
    @Test(arguments: InstalledKernels.standard)
    func zstdModuleLoadsUnderQemu(release: String) async throws {
        let scratch = CLI.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        for file in ["Kbuild", "nvbuild_plain.c"] {
            try FileManager.default.copyItem(
                atPath: CLI.repository + "/Tests/Fixtures/plain-module/" + file, toPath: scratch + "/" + file)
        }
        let make = try await ProcessRunner().run(["make", "-C", "/lib/modules/\(release)/build", "M=\(scratch)", "modules"])
        try #require(make.succeeded, "building the plain module for \(release): \(make.standardError)")
        let compress = try await ProcessRunner().run(["zstd", "-q", "--rm", scratch + "/nvbuild_plain.ko"])
        try #require(compress.succeeded, "zstd: \(compress.standardError)")
        let module = scratch + "/nvbuild_plain.ko.zst"
        try #require(FileManager.default.fileExists(atPath: module))

        let tried = try CLI.run(["modules", "try", "--kernel", release, "--no-deps", "--json", "--timeout", "240", module])
        #expect(tried.status == 0, "\(tried.stderr)\n\(tried.stdout)")
        let trial = try Self.results(tried.stdout)
        #expect(trial.method == "qemu")
        let loaded = try #require(trial.results.first)
        #expect(trial.results.count == 1)
        #expect(loaded.loads, "\(loaded.messages)")
        #expect(loaded.messages.contains("nvbuild_plain: loaded"), "\(loaded.messages)")

        // The simulation reads the same compressed file and predicts the kernel's own messages.
        let verified = try CLI.run(["modules", "verify", "--kernel", release, "--no-deps", "--json", module])
        #expect(verified.status == 0, "\(verified.stderr)")
        let predicted = try #require(try Self.results(verified.stdout).results.first)
        #expect(predicted.loads == loaded.loads && predicted.errno == loaded.errno)
        #expect(Array(loaded.messages.prefix(predicted.messages.count)) == predicted.messages, "verify \(predicted.messages) / try \(loaded.messages)")
    }

    struct Report: Decodable {
        struct Result: Decodable {
            var module: String
            var loads: Bool
            var errno: Int32
            var messages: [String]
        }
        var method: String
        var results: [Result]
    }

    static func results(_ json: String) throws -> Report {
        try JSONDecoder().decode(Report.self, from: Data(json.utf8))
    }
}
