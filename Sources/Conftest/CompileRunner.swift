import Foundation
import NVBuildSupport

/// Runs conftest compiles, each in its own private directory, never through a
/// shell, keeping every diagnostic.
public struct CompileRunner: Sendable {
    public var compiler: [String]
    public var flags: [String]
    public var runner: ProcessRunner
    /// A private scratch directory this run owns (removed by the caller).
    public var scratch: String

    public init(compiler: [String], flags: [String], scratch: String, runner: ProcessRunner = ProcessRunner()) {
        self.compiler = compiler
        self.flags = flags
        self.scratch = scratch
        self.runner = runner
    }

    /// The exact command line of a compile in `directory` (the private dir is
    /// on the include path so auxiliary files resolve like conftest.sh's).
    public func compileCommand(directory: String) -> [String] {
        compiler + flags + ["-I\(directory)", "-MD", "-MF", "conftest.d", "-c", "conftest.c", "-o", "conftest.o"]
    }

    public func compile(id: String, source: String, files: [TestDefinition.AuxiliaryFile]) async throws -> (compiled: Bool, diagnostics: String, command: [String], dependencies: [String]) {
        let directory = "\(scratch)/\(id)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data(source.utf8).write(to: URL(fileURLWithPath: directory + "/conftest.c"))
        for file in files {
            try Data(file.content.utf8).write(to: URL(fileURLWithPath: directory + "/" + file.name))
        }
        let command = compileCommand(directory: directory)
        let output = try await runner.run(command, workingDirectory: directory)
        let compiled = output.succeeded && FileManager.default.fileExists(atPath: directory + "/conftest.o")
        let rule = (try? String(contentsOfFile: directory + "/conftest.d", encoding: .utf8)) ?? ""
        let dependencies = ResultCache.dependencies(fromMakeRule: rule, directory: directory)
            .filter { !$0.hasPrefix(directory + "/") }
        return (compiled, output.standardError, command, dependencies)
    }

    /// test_kernel_header: preprocess `#include <header>` with -E -M; on failure retry with -MG,
    /// where success means the header is missing and failure means it exists but does not
    /// preprocess on its own (still reported present).
    public func headerPresent(_ header: String, index: Int) async throws -> (present: Bool, diagnostics: String) {
        let directory = "\(scratch)/header-\(index)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data("#include <\(header)>\n".utf8).write(to: URL(fileURLWithPath: directory + "/presence.c"))
        var extra: [String] = []
        for oot in ["/usr/src/nvidia/nvidia-public/include", "/usr/src/nvidia/nvidia-oot/include"]
        where FileManager.default.fileExists(atPath: oot) {
            extra.append("-I\(oot)")
        }
        let base = compiler + ["-E", "-M"] + extra + flags
        let first = try await runner.run(base + ["presence.c"], workingDirectory: directory)
        if first.succeeded { return (true, first.standardError) }
        let second = try await runner.run(base + ["-MG", "presence.c"], workingDirectory: directory)
        return (!second.succeeded, first.standardError)
    }

    /// The kernel's UTS_RELEASE as the preprocessor expands it.
    public func utsRelease() async throws -> String {
        let directory = "\(scratch)/uts"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data("#include <generated/utsrelease.h>\nUTS_RELEASE\n".utf8).write(to: URL(fileURLWithPath: directory + "/uts.c"))
        let output = try await runner.run(compiler + ["-E", "-P"] + flags + ["uts.c"], workingDirectory: directory)
        return output.standardOutput.split(separator: "\n").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
    }
}

/// Runs async work over a collection with at most `limit` tasks at once, keeping input order.
func concurrentMap<T: Sendable, R: Sendable>(_ items: [T], limit: Int, _ body: @escaping @Sendable (T) async throws -> R) async throws -> [R] {
    try await withThrowingTaskGroup(of: (Int, R).self) { group in
        var results = [R?](repeating: nil, count: items.count)
        var next = 0
        for _ in 0..<min(max(limit, 1), items.count) {
            let i = next
            group.addTask { (i, try await body(items[i])) }
            next += 1
        }
        while let (i, r) = try await group.next() {
            results[i] = r
            if next < items.count {
                let j = next
                group.addTask { (j, try await body(items[j])) }
                next += 1
            }
        }
        return results.map { $0! }
    }
}
