import TestSupport
import Foundation
import NVBuildSupport

/// Paths and helpers shared by the DKMS and Kbuild tests.
enum Fixtures {
    static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        url.deleteLastPathComponent()  // DKMSTests
        url.deleteLastPathComponent()  // Tests
        return url.appendingPathComponent("Fixtures").path
    }()
    static let repository = URL(fileURLWithPath: root).deletingLastPathComponent().deletingLastPathComponent().path

    static func dkms(_ name: String) -> String { "\(root)/dkms/\(name)" }
    static var plainModule: String { "\(root)/plain-module" }
    static var brokenModule: String { "\(root)/broken-module" }

    /// The two Debian kernels every machine of this project has.
    static let kernels = InstalledKernels.standard

    static func temporaryDirectory(_ label: String) throws -> String {
        let path = NSTemporaryDirectory() + "nvbuild-\(label)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static var isRoot: Bool { geteuid() == 0 }

    /// The built `nvbuild` next to the test bundle (or in the repository's debug build).
    static var nvbuildBinary: String? {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("nvbuild").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        let fallback = repository + "/.build/debug/nvbuild"
        return FileManager.default.isExecutableFile(atPath: fallback) ? fallback : nil
    }
    static var hasDKMS: Bool { ProcessRunner.lookup("dkms") != nil }

    @discardableResult
    static func run(_ args: [String], in directory: String? = nil) async throws -> ProcessOutput {
        try await ProcessRunner().run(args, workingDirectory: directory)
    }
}
