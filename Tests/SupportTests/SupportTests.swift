import Foundation
import NVBuildSupport
import Testing

@Suite struct AtomicFileTests {
    @Test func replacesContentAndLeavesNoTemporary() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/nvbuild-atomic-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/sub/file.h"
        try AtomicFile.write("first\n", to: path)
        try AtomicFile.write("second\n", to: path, durable: false)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "second\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/sub") == ["file.h"])
    }

    @Test func unwritableDirectoryIsAnError() {
        #expect(throws: (any Error).self) { try AtomicFile.write("x", to: "/proc/nvbuild-cannot-write/file") }
    }
}

@Suite struct MakeSyntaxTests {
    @Test func joinsContinuationsAndDropsComments() {
        let text = "A = one \\\n  two # comment\nB := three\n"
        #expect(MakeSyntax.logicalLines(text).first == "A = one    two ")
        #expect(MakeSyntax.listValue(of: "A", in: text) == ["one", "two"])
        #expect(MakeSyntax.listValue(of: "B", in: text) == ["three"])
        #expect(MakeSyntax.listValue(of: "C", in: text) == [])
    }
}

@Suite struct ProcessRunnerTests {
    @Test func capturesOutputAndStatus() async throws {
        let out = try await ProcessRunner().run(["sh", "-c", "echo out; echo err >&2; exit 3"])
        #expect(out.exitStatus == 3)
        #expect(out.standardOutput == "out\n")
        #expect(out.standardError == "err\n")
    }

    @Test func missingExecutableIsNamed() async {
        await #expect(throws: ProcessRunnerError.executableNotFound("nvbuild-no-such-tool")) {
            try await ProcessRunner().run(["nvbuild-no-such-tool"])
        }
    }

    @Test func streamsMergedOutputWhileTheCommandRuns() async throws {
        let dir = FileManager.default.temporaryDirectory.path + "/nvbuild-stream-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // The command waits until the first line has been seen, so the test fails (by
        // timing out) if output were only handed over when the process ends.
        let script = "echo first; i=0; while [ ! -e seen ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; echo err >&2; [ -e seen ] && exit 4; exit 9"
        let received = Received()
        let status = try await ProcessRunner().stream(["sh", "-c", script], workingDirectory: dir) { chunk in
            await received.append(chunk)
            if await received.text.contains("first\n") { _ = FileManager.default.createFile(atPath: dir + "/seen", contents: nil) }
        }
        #expect(status == 4)
        #expect(await received.text == "first\nerr\n")
    }

    @Test func streamNamesAMissingExecutable() async {
        await #expect(throws: ProcessRunnerError.executableNotFound("nvbuild-no-such-tool")) {
            try await ProcessRunner().stream(["nvbuild-no-such-tool"]) { _ in }
        }
    }
}

private actor Received {
    var bytes: [UInt8] = []
    func append(_ chunk: [UInt8]) { bytes += chunk }
    var text: String { String(decoding: bytes, as: UTF8.self) }
}
