import Foundation
import TestSupport
import Testing

/// Every error reaches the user as one line in the project's words, through the real
/// binary: the exit status documented, the file named, none of Foundation's own text,
/// no raw terminal control byte, and nothing half-written.
@Suite struct ErrorWordingTests {
    /// A scratch folder holding `files` (name → bytes), removed by the caller.
    static func scratch(_ files: [String: [UInt8]] = [:]) throws -> String {
        let dir = CLI.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (name, bytes) in files {
            let path = dir + "/" + name
            try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path, withIntermediateDirectories: true)
            try Data(bytes).write(to: URL(fileURLWithPath: path))
        }
        return dir
    }

    /// A copy of a fixture tree with `suffix` appended to one of its files.
    static func copy(_ tree: String, appending suffix: [UInt8], to file: String) throws -> String {
        let dir = CLI.temporaryDirectory()
        try FileManager.default.copyItem(atPath: tree, toPath: dir)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/" + file))
        try handle.seekToEnd()
        handle.write(Data(suffix))
        try handle.close()
        return dir
    }

    static var plainModule: String { CLI.repository + "/Tests/Fixtures/plain-module" }

    /// The shape every error must have.
    static func expectOneLine(_ out: CLI.Output, status: Int32, naming file: String, saying words: String? = nil,
                              sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(out.status == status, "exit \(out.status): \(out.stderr)", sourceLocation: sourceLocation)
        #expect(out.stderr.split(separator: "\n").count == 1, "not one line: \(out.stderr)", sourceLocation: sourceLocation)
        #expect(out.stderr.hasPrefix("error: "), "\(out.stderr)", sourceLocation: sourceLocation)
        #expect(out.stderr.contains(file), "\(out.stderr) does not name \(file)", sourceLocation: sourceLocation)
        if let words { #expect(out.stderr.contains(words), "\(out.stderr) does not say \(words)", sourceLocation: sourceLocation) }
        expectClean(out, sourceLocation: sourceLocation)
    }

    static func expectClean(_ out: CLI.Output, sourceLocation: SourceLocation = #_sourceLocation) {
        for foreign in ["Error Domain=", "NSCocoaErrorDomain", "UserInfo=", "NSPOSIXErrorDomain"] {
            #expect(!out.stderr.contains(foreign) && !out.stdout.contains(foreign), "Foundation text reached the user: \(out.stderr)",
                    sourceLocation: sourceLocation)
        }
        #expect(!out.stderr.utf8.contains(0x1B) && !out.stdout.utf8.contains(0x1B), "a raw ESC byte reached the terminal",
                sourceLocation: sourceLocation)
    }

    static func entries(_ dir: String) -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: dir))?.sorted() ?? [] }

    // MARK: Foundation's file-system errors

    @Test func packageOutputThatIsAFileIsAUsageErrorNamingIt() throws {
        let dir = try Self.scratch(["taken": Array("not a folder\n".utf8)])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = try CLI.run(["dkms", "package", "--tree", Self.plainModule, "--name", "hello", "--version", "1.0", "--output", dir + "/taken"])
        Self.expectOneLine(out, status: 2, naming: dir + "/taken", saying: "a file with that name exists (choose another --output)")
        #expect(Self.entries(dir) == ["taken"], "something was written: \(Self.entries(dir))")
        #expect(try String(contentsOfFile: dir + "/taken", encoding: .utf8) == "not a folder\n")
    }

    @Test func overlongPackageNameIsAUsageError() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let name = String(repeating: "n", count: 300)
        let out = try CLI.run(["dkms", "package", "--tree", Self.plainModule, "--name", name, "--version", "1.0", "--output", dir + "/out"])
        Self.expectOneLine(out, status: 2, naming: "--name", saying: "300 characters")
        #expect(Self.entries(dir).isEmpty)
    }

    /// A write that fails at the last step (the tarball's name is a folder) names the file.
    @Test func tarballOntoAFolderNamesIt() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/hello.tar.gz", withIntermediateDirectories: true)
        let out = try CLI.run(["dkms", "package", "--tree", Self.plainModule, "--name", "hello", "--version", "1.0",
                               "--output", dir + "/out", "--tarball", dir + "/hello.tar.gz"])
        Self.expectOneLine(out, status: 2, naming: dir + "/hello.tar.gz", saying: "it is a folder")
        #expect(Self.entries(dir) == ["hello.tar.gz"], "left behind: \(Self.entries(dir))")
        #expect(Self.entries(dir + "/hello.tar.gz").isEmpty)
    }

    @Test func probeOutputThatIsAFileNamesIt() throws {
        let kernel = try CLI.standardKernel("6.12.")
        let dir = try Self.scratch(["taken": Array("x\n".utf8)])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = try CLI.run(["probe", "--quiet", "--no-cache", "--tree", CLI.fixture, "--kernel", kernel, "--output", dir + "/taken"])
        Self.expectOneLine(out, status: 2, naming: dir + "/taken", saying: "a file with that name exists")
        #expect(Self.entries(dir) == ["taken"])
    }

    @Test func cacheDirectoryUnderAFileNamesIt() throws {
        let kernel = try CLI.standardKernel("6.12.")
        let dir = try Self.scratch(["taken": Array("x\n".utf8)])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = try CLI.run(["probe", "--quiet", "--tree", CLI.fixture, "--kernel", kernel, "--cache-dir", dir + "/taken/cache",
                               "--output", dir + "/conftest"])
        Self.expectOneLine(out, status: 2, naming: dir + "/taken/cache", saying: "not a folder")
        #expect(Self.entries(dir) == ["taken"])
    }

    /// What no call site translates (here the probe's scratch folder, under TMPDIR) is
    /// still worded by the top-level catch: path and cause, exit 2.
    @Test func untranslatedFoundationErrorIsStillOneLine() throws {
        let kernel = try CLI.standardKernel("6.12.")
        let dir = try Self.scratch(["taken": Array("x\n".utf8)])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = try CLI.run(["probe", "--quiet", "--no-cache", "--tree", CLI.fixture, "--kernel", kernel, "--output", dir + "/conftest"],
                              environment: ["TMPDIR": dir + "/taken"])
        Self.expectOneLine(out, status: 2, naming: dir + "/taken/", saying: "a part of the path is a file, not a folder")
        #expect(Self.entries(dir) == ["taken"])
    }

    // MARK: Text that is not UTF-8

    /// Latin-1 "é" (0xE9) where the Kbuild expects UTF-8: every command reading the tree
    /// names the file, its line and the byte's offset, and writes nothing.
    @Test func kbuildThatIsNotUTF8IsNamedWithItsOffset() throws {
        let kernel = try CLI.standardKernel("6.12.")
        let tree = try Self.copy(CLI.fixture, appending: Array("# caf".utf8) + [0xE9] + Array("\n".utf8), to: "Kbuild")
        let out = try Self.scratch()
        defer {
            try? FileManager.default.removeItem(atPath: tree)
            try? FileManager.default.removeItem(atPath: out)
        }
        let size = try #require(FileManager.default.attributesOfItem(atPath: tree + "/Kbuild")[.size] as? Int)
        let offset = "offset \(size - 2)"
        let probe = try CLI.run(["probe", "--quiet", "--no-cache", "--tree", tree, "--kernel", kernel, "--output", out + "/conftest"])
        Self.expectOneLine(probe, status: 2, naming: tree + "/Kbuild:", saying: offset)
        #expect(probe.stderr.contains("0xe9"))
        let package = try CLI.run(["dkms", "package", "--tree", tree, "--name", "nvfixture", "--version", "1.0", "--output", out + "/dkms"])
        Self.expectOneLine(package, status: 2, naming: tree + "/Kbuild:", saying: offset)
        let build = try CLI.run(["build", "--tree", tree, "--kernel", kernel, "--build-dir", out + "/build", "--no-cache"])
        Self.expectOneLine(build, status: 2, naming: tree + "/Kbuild:", saying: offset)
        #expect(Self.entries(out).isEmpty, "written: \(Self.entries(out))")
        #expect(!FileManager.default.fileExists(atPath: tree + "/conftest"))
    }

    @Test func plainKbuildThatIsNotUTF8IsNamed() throws {
        let kernel = try CLI.standardKernel("6.12.")
        let tree = try Self.copy(Self.plainModule, appending: [0x23, 0x20, 0xFF, 0x0A], to: "Kbuild")
        let out = try Self.scratch()
        defer {
            try? FileManager.default.removeItem(atPath: tree)
            try? FileManager.default.removeItem(atPath: out)
        }
        let build = try CLI.run(["build", "--tree", tree, "--kernel", kernel, "--build-dir", out + "/build"])
        Self.expectOneLine(build, status: 2, naming: tree + "/Kbuild:", saying: "0xff")
        #expect(Self.entries(out).isEmpty)
    }

    /// header-presence-tests.mk and a module's .Kbuild fragment are read as strictly as the Kbuild.
    @Test func makeFragmentsThatAreNotUTF8AreNamed() throws {
        let kernel = try CLI.standardKernel("6.12.")
        for (file, bytes) in [("header-presence-tests.mk", [UInt8]([0x23, 0xF5, 0x0A])), ("nvfixture/nvfixture.Kbuild", [0x23, 0xED, 0xA0, 0x80, 0x0A])] {
            let tree = try Self.copy(CLI.fixture, appending: bytes, to: file)
            defer { try? FileManager.default.removeItem(atPath: tree) }
            let probe = try CLI.run(["probe", "--quiet", "--no-cache", "--tree", tree, "--kernel", kernel])
            Self.expectOneLine(probe, status: 2, naming: tree + "/" + file + ":", saying: "not UTF-8")
            #expect(!FileManager.default.fileExists(atPath: tree + "/conftest"))
        }
    }

    @Test func catalogFileThatIsNotUTF8IsNamed() throws {
        let kernel = try CLI.standardKernel("6.12.")
        let catalog = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: catalog) }
        try FileManager.default.copyItem(atPath: CLI.repository + "/conftest", toPath: catalog)
        let file = try #require(Self.entries(catalog).first { $0.hasSuffix(".conftest") })
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: catalog + "/" + file))
        try handle.seekToEnd()
        handle.write(Data([0x23, 0xC3, 0x28, 0x0A]))
        try handle.close()
        let out = try CLI.run(["probe", "--quiet", "--no-cache", "--tree", CLI.fixture, "--kernel", kernel, "--catalog", catalog, "--output", catalog + "/out"])
        Self.expectOneLine(out, status: 2, naming: catalog + "/" + file + ":", saying: "0xc3")
        #expect(!FileManager.default.fileExists(atPath: catalog + "/out"))
    }

    @Test func dkmsConfThatIsNotUTF8IsNamed() throws {
        let dir = try Self.scratch(["dkms.conf": Array("PACKAGE_NAME=\"caf".utf8) + [0xE9] + Array("\"\n".utf8)])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = try CLI.run(["dkms", "lint", dir + "/dkms.conf"])
        Self.expectOneLine(out, status: 2, naming: dir + "/dkms.conf:1:", saying: "offset 17")
    }

    @Test func templateThatIsNotUTF8IsNamed() throws {
        let dir = try Self.scratch(["t.mustache": [0x50, 0x41, 0xFE, 0x0A]])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = try CLI.run(["dkms", "package", "--tree", Self.plainModule, "--name", "hello", "--version", "1.0",
                               "--output", dir + "/out", "--template", dir + "/t.mustache"])
        Self.expectOneLine(out, status: 2, naming: dir + "/t.mustache:1:", saying: "offset 2")
        #expect(Self.entries(dir) == ["t.mustache"])
    }

    /// A FIFO named dkms.conf is refused without blocking on it.
    @Test func fifoIsRefusedWithoutBlocking() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(mkfifo(dir + "/dkms.conf", 0o644) == 0)
        let out = try CLI.run(["dkms", "lint", dir + "/dkms.conf"])
        Self.expectOneLine(out, status: 2, naming: dir + "/dkms.conf", saying: "not a regular file")
    }

    // MARK: Terminal control characters and hook paths

    /// A dkms.conf line holding ESC[2J (clear screen) is shown escaped; the JSON output
    /// carries it as a proper JSON string escape.
    @Test func controlCharactersFromInputAreEscaped() throws {
        let conf = "PACKAGE_NAME=\"x\"\nPACKAGE_VERSION=\"1\"\nBUILT_MODULE_NAME[0]=\"x\"\nDEST_MODULE_LOCATION[0]=\"/updates/dkms\"\necho \u{1B}[2J\u{9B}31m hi\n"
        let dir = try Self.scratch(["dkms.conf": Array(conf.utf8)])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let text = try CLI.run(["dkms", "lint", dir + "/dkms.conf"])
        #expect(text.status == 1)
        Self.expectClean(text)
        #expect(text.stderr.contains("\(dir)/dkms.conf:5: error: `echo \\x1b[2J\\u{9b}31m hi`"), "\(text.stderr)")
        #expect(!text.stderr.unicodeScalars.contains("\u{9B}"))
        let json = try CLI.run(["dkms", "lint", "--json", dir + "/dkms.conf"])
        #expect(json.status == 1)
        Self.expectClean(json)
        #expect(json.stdout.contains("\\u001b[2J"))
        let findings = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        #expect(findings.contains { ($0["message"] as? String)?.contains("\u{1B}[2J") == true })
    }

    /// A hook script that leaves the package, or names an absolute path, is an error with file:line.
    @Test func hookPathsLeavingThePackageAreErrors() throws {
        let conf = """
            PACKAGE_NAME="x"
            PACKAGE_VERSION="1"
            BUILT_MODULE_NAME[0]="x"
            DEST_MODULE_LOCATION[0]="/updates/dkms"
            POST_INSTALL="../../../../tmp/x.sh"
            PRE_BUILD="/tmp/y.sh --now"
            POST_BUILD="scripts/../scripts/ok.sh"

            """
        let dir = try Self.scratch(["dkms.conf": Array(conf.utf8)])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = try CLI.run(["dkms", "lint", dir + "/dkms.conf"])
        #expect(out.status == 1)
        Self.expectClean(out)
        let lines = out.stderr.split(separator: "\n")
        #expect(lines.count == 2, "\(out.stderr)")
        #expect(lines.first?.hasPrefix("\(dir)/dkms.conf:5: error: POST_INSTALL=\"../../../../tmp/x.sh\" leaves the package") == true, "\(out.stderr)")
        #expect(lines.last?.hasPrefix("\(dir)/dkms.conf:6: error: PRE_BUILD=\"/tmp/y.sh\" is an absolute path") == true, "\(out.stderr)")
        #expect(lines.allSatisfy { $0.contains("[hook-path]") })
    }
}
