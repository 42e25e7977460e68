import Foundation
import NVBuildSupport
import TestSupport
import Testing

/// `nvbuild inspect` on several files, one of them broken: the good ones print exactly
/// what modinfo prints, the broken one gets one error line, and the status is 1.
@Suite struct InspectCommandTests {
    @Test func goodFilesMatchModinfoAndACorruptOneIsNamed() async throws {
        let kernel = try CLI.standardKernel("6.1.")
        try InstalledKernels.requireImage(kernel)
        let directory = "/lib/modules/\(kernel)/kernel"
        let good = [directory + "/fs/fat/fat.ko", directory + "/drivers/usb/storage/usb-storage.ko"]
        for path in good { try #require(FileManager.default.fileExists(atPath: path), "run scripts/setup") }
        let scratch = CLI.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        // A copy cut in the middle: the section headers at the end are gone.
        let corrupt = scratch + "/truncated-fat.ko"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: good[0]))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: corrupt))

        let result = try CLI.run(["inspect", good[0], corrupt, good[1]])
        #expect(result.status == 1, "\(result.stderr)")

        let modinfo = try await ProcessRunner().run(["modinfo"] + good)
        let expected = modinfo.standardOutput
        #expect(modinfo.succeeded)
        #expect(!expected.isEmpty)
        #expect(result.stdout == expected)

        let errorLines = result.stderr.split(separator: "\n").filter { $0.contains(corrupt) }
        #expect(errorLines.count == 1, "stderr: \(result.stderr)")
        #expect(errorLines.first?.contains("truncated") == true, "\(errorLines)")
        #expect(!result.stderr.contains(good[0]) && !result.stderr.contains(good[1]))
    }
}
