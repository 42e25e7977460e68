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

    /// The built `nvbuild`, for tests where dkms runs it as an installed tool would.
    static var nvbuildBinary: String? { BuiltProducts.nvbuild }
    static var hasDKMS: Bool { ProcessRunner.lookup("dkms") != nil }

    @discardableResult
    static func run(_ args: [String], in directory: String? = nil) async throws -> ProcessOutput {
        try await ProcessRunner().run(args, workingDirectory: directory)
    }
}
