import Foundation
import Testing

/// `nvbuild build` on the NVIDIA-shaped fixture tree: probe first (through the
/// catalog), then the kernel's own Kbuild, for both standard kernels at once.
@Suite struct BuildCommandTests {
    @Test func fixtureTreeBuildsForBothKernelsWithMatchingVermagic() throws {
        let kernels = [try CLI.standardKernel("6.1."), try CLI.standardKernel("6.12.")]
        let copy = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: copy) }
        try FileManager.default.copyItem(atPath: CLI.fixture, toPath: copy)
        let out = try CLI.run(["build", "--tree", copy, "--kernel", kernels[0], "--kernel", kernels[1], "--jobs", "2", "--json"])
        #expect(out.status == 0, "\(out.stderr)")
        let rows = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(rows.count == 2)
        for row in rows {
            let release = row["release"] as? String ?? ""
            #expect(kernels.contains(release))
            #expect(row["succeeded"] as? Bool == true)
            let modules = row["modules"] as? [[String: Any]] ?? []
            #expect(Set(modules.compactMap { $0["name"] as? String }) == ["nvfixture", "nvfixture-drm"])
            for module in modules {
                let path = module["path"] as? String ?? ""
                let vermagic = module["vermagic"] as? String ?? ""
                #expect(vermagic.hasPrefix(release + " "))
                // The table's vermagic is the module's own, as modinfo reads it.
                let modinfo = Process()
                modinfo.executableURL = URL(fileURLWithPath: "/sbin/modinfo")
                modinfo.arguments = ["-F", "vermagic", path]
                let pipe = Pipe()
                modinfo.standardOutput = pipe
                try modinfo.run()
                let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                modinfo.waitUntilExit()
                #expect(text == vermagic + "\n")
                // The build used conftest/ from the probe.
                let conftest = URL(fileURLWithPath: path).deletingLastPathComponent().path + "/conftest/functions.h"
                #expect((try? String(contentsOfFile: conftest, encoding: .utf8))?.contains("\"\(release)\"") == true)
            }
        }
    }
}
