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

@Suite struct TextFileTests {
    static func scratch(_ bytes: [UInt8]) throws -> String {
        let path = FileManager.default.temporaryDirectory.path + "/nvbuild-text-\(UUID().uuidString)"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// The validator agrees with the standard library's own UTF-8 validation on every
    /// input, and the prefix before the reported offset is always valid.
    @Test func agreesWithTheStandardLibrary() {
        var generator = SystemRandomNumberGenerator()
        // Bytes weighted towards the interesting ranges: ASCII, continuation bytes, lead bytes.
        let alphabet: [UInt8] = [0x41, 0x0A, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE,
                                 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]
        for _ in 0..<20000 {
            let bytes = (0..<Int.random(in: 0...8, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }
            let offset = TextFile.firstInvalidUTF8(bytes)
            #expect((offset == nil) == (String(validating: bytes, as: UTF8.self) != nil), "\(bytes)")
            if let offset { #expect(String(validating: bytes[..<offset], as: UTF8.self) != nil, "\(bytes) at \(offset)") }
        }
    }

    @Test func namesTheFileLineAndOffset() throws {
        let path = try Self.scratch(Array("obj-m += a.o\n# caf".utf8) + [0xE9] + Array("\n".utf8))
        defer { unlink(path) }
        do {
            _ = try TextFile.read(path)
            Issue.record("Latin-1 text was accepted")
        } catch {
            #expect(error.kind == .environment)
            #expect(error.message == "\(path):2: not UTF-8 text: byte 0xe9 at offset 18 is invalid (save the file as UTF-8)")
        }
        #expect(try TextFile.readIfPresent(path + ".missing") == nil)
        #expect(throws: UserError.self) { try TextFile.read(path + ".missing") }
        let good = try Self.scratch(Array("caf\u{e9} ✓\n".utf8))
        defer { unlink(good) }
        #expect(try TextFile.read(good) == "caf\u{e9} ✓\n")
    }
}

@Suite struct FileSystemErrorTests {
    /// Real Foundation errors, worded: the cause in plain words, the path, never Foundation's text.
    @Test func foundationErrorsBecomeOneSentence() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/nvbuild-fserr-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(FileManager.default.createFile(atPath: dir + "/file", contents: Data()))
        let cases: [(operation: () throws -> Void, path: String, cause: String)] = [
            ({ try FileManager.default.createDirectory(atPath: dir + "/file", withIntermediateDirectories: true) }, dir + "/file", "a file with that name exists"),
            ({ try FileManager.default.createDirectory(atPath: dir + "/file/sub", withIntermediateDirectories: true) }, dir + "/file/sub", "a part of the path is a file, not a folder"),
            ({ try FileManager.default.createDirectory(atPath: dir + "/" + String(repeating: "n", count: 300), withIntermediateDirectories: true) },
             dir + "/" + String(repeating: "n", count: 300), "the name is too long"),
            ({ _ = try String(contentsOfFile: dir + "/none", encoding: .utf8) }, dir + "/none", "no such file or folder"),
        ]
        for c in cases {
            do {
                try c.operation()
                Issue.record("no error for \(c.path)")
            } catch {
                let sentence = UserError.fileSystem(cannot: "create", c.path, error, remedy: "choose another --output").message
                #expect(sentence.hasPrefix("cannot create \(c.path): \(c.cause)"), "\(sentence)")
                #expect(sentence.hasSuffix(" (choose another --output)"))
                let described = UserError.describe(error)
                #expect(described.contains(c.path) && described.contains(c.cause), "\(described)")
                for text in [sentence, described] {
                    #expect(!text.contains("Error Domain=") && !text.contains("UserInfo=") && !text.contains("NSCocoaErrorDomain"))
                }
            }
        }
    }

    @Test func atomicWriteNamesTheTargetNotItsTemporary() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/nvbuild-fserr-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(FileManager.default.createFile(atPath: dir + "/file", contents: Data()))
        do {
            try AtomicFile.write("x", to: dir + "/file/out.h")
            Issue.record("wrote under a file")
        } catch {
            #expect("\(error)" == "cannot create the folder \(dir)/file: a file with that name exists")
        }
        try FileManager.default.createDirectory(atPath: dir + "/folder.h", withIntermediateDirectories: true)
        do {
            try AtomicFile.write("x", to: dir + "/folder.h")
            Issue.record("replaced a folder")
        } catch {
            #expect("\(error)" == "cannot replace \(dir)/folder.h: it is a folder")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["file", "folder.h"])
    }
}
