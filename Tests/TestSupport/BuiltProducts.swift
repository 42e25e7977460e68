import Foundation

/// Products of the build under test.
public enum BuiltProducts {
    /// The `nvbuild` executable next to the test bundle (`swift test` builds it), or the
    /// repository's debug build; nil when neither exists.
    public static let nvbuild: String? = {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("nvbuild").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let debug = repository + "/.build/debug/nvbuild"
        return FileManager.default.isExecutableFile(atPath: debug) ? debug : nil
    }()
}
