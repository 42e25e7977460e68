import Foundation
import ModuleELF
import TestSupport
import Testing

/// Damaged files built from a real module: each must give one ModuleReadError that names the
/// file and the problem, never a crash, a hang or a partial result.
@Suite struct HostileInputTests {
    // Debian's 6.1 image ships plain modules, 6.12 xz-compressed ones.
    static let plainPath = InstalledKernels.module("drivers/usb/storage/usb-storage.ko", compressedAs: "") ?? "usb-storage.ko: no uncompressed copy installed (run scripts/setup)"
    static let xzPath = InstalledKernels.module("drivers/usb/storage/usb-storage.ko", compressedAs: ".xz") ?? "usb-storage.ko.xz: no xz copy installed (run scripts/setup)"

    private func bytes(_ path: String) throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    private func readError(_ path: String) -> ModuleReadError? {
        do {
            _ = try ModuleFile.read(path: path)
            return nil
        } catch {
            return error
        }
    }

    /// Section header `index` of a 64-bit little-endian ELF: (file offset of the header, name).
    private func sectionHeader(named wanted: String, in image: [UInt8]) throws -> Int {
        func le(_ offset: Int, _ size: Int) -> Int {
            (0..<size).reversed().reduce(0) { $0 << 8 | Int(image[offset + $1]) }
        }
        let tableOffset = le(0x28, 8), count = le(0x3C, 2), namesIndex = le(0x3E, 2)
        let namesOffset = le(tableOffset + namesIndex * 64 + 0x18, 8)
        for index in 1..<count {
            let header = tableOffset + index * 64
            var nameStart = namesOffset + le(header, 4)
            var name: [UInt8] = []
            while image[nameStart] != 0 { name.append(image[nameStart]); nameStart += 1 }
            if String(decoding: name, as: UTF8.self) == wanted { return header }
        }
        throw CancellationError()
    }

    private func expectError(_ path: String, containing text: String) {
        let error = readError(path)
        #expect(error != nil, "\(path) was accepted")
        guard let error else { return }
        #expect(error.description.hasPrefix(path + ": "), "message does not name the file: \(error)")
        #expect(!error.description.contains("\n"), "message is not one line: \(error)")
        #expect(error.description.contains(text), "\(error) does not say \(text)")
    }

    @Test func zeroLengthFile() throws {
        let scratch = try ScratchDirectory()
        expectError(scratch.write("empty.ko", []), containing: "empty")
    }

    @Test func notAnELFFile() throws {
        let scratch = try ScratchDirectory()
        expectError(scratch.write("text.ko", Array("obj-m += hello.o\n".utf8)), containing: "not an ELF file")
    }

    @Test func truncatedModule() throws {
        let scratch = try ScratchDirectory()
        let image = try bytes(Self.plainPath)
        expectError(scratch.write("half.ko", Array(image.prefix(image.count / 2))), containing: "truncated")
        expectError(scratch.write("header.ko", Array(image.prefix(40))), containing: "truncated")
    }

    @Test func elfForAnotherMachine() throws {
        let scratch = try ScratchDirectory()
        var image = try bytes(Self.plainPath)
        image[0x12] = 183  // e_machine = EM_AARCH64
        image[0x13] = 0
        let path = scratch.write("arm64.ko", image)
        expectError(path, containing: "AArch64")
        // Still readable when the caller asks for any machine.
        #expect(try ModuleFile.read(path: path, parts: .modinfo, expectedMachine: nil).machine == 183)
    }

    @Test func sectionPastTheEnd() throws {
        let scratch = try ScratchDirectory()
        var image = try bytes(Self.plainPath)
        let header = try sectionHeader(named: ".modinfo", in: image)
        image[header + 0x18 + 5] = 0x7F  // sh_offset far beyond the file
        expectError(scratch.write("offset.ko", image), containing: "section .modinfo")
        var sized = try bytes(Self.plainPath)
        sized[header + 0x20 + 4] = 0x01  // sh_size + 4 GiB
        expectError(scratch.write("size.ko", sized), containing: "extends past the end")
    }

    @Test func modinfoWithoutTerminator() throws {
        let scratch = try ScratchDirectory()
        var image = try bytes(Self.plainPath)
        let header = try sectionHeader(named: ".modinfo", in: image)
        let offset = (0..<8).reversed().reduce(0) { $0 << 8 | Int(image[header + 0x18 + $1]) }
        let size = (0..<8).reversed().reduce(0) { $0 << 8 | Int(image[header + 0x20 + $1]) }
        for index in offset..<(offset + size) where image[index] == 0 { image[index] = UInt8(ascii: "x") }
        expectError(scratch.write("modinfo.ko", image), containing: ".modinfo")
    }

    @Test func corruptXZStream() throws {
        let scratch = try ScratchDirectory()
        var image = try bytes(Self.xzPath)
        for index in stride(from: 200, to: 400, by: 7) { image[index] ^= 0x5A }
        expectError(scratch.write("corrupt.ko.xz", image), containing: "corrupt xz stream")
        let whole = try bytes(Self.xzPath)
        expectError(scratch.write("cut.ko.xz", Array(whole.prefix(whole.count / 2))), containing: "xz")
    }

    @Test func corruptZstdAndGzip() throws {
        let scratch = try ScratchDirectory()
        expectError(scratch.write("bad.ko.zst", [0x28, 0xB5, 0x2F, 0xFD, 0xFF, 0xFF, 0x00]), containing: "zstd")
        expectError(scratch.write("bad.ko.gz", [0x1F, 0x8B, 0x08, 0x00, 0x01, 0x02]), containing: "gzip")
    }

    @Test func zstdAndGzipModulesReadLikeTheOriginal() async throws {
        // Compress a real module with the real tools; the contents must not change.
        let scratch = try ScratchDirectory()
        let plain = scratch.write("usb-storage.ko", try bytes(Self.plainPath))
        try await runTool(["zstd", "-q", "-k", plain])
        try await runTool(["gzip", "-k", plain])
        let original = try ModuleFile.read(path: plain)
        for (suffix, format) in [(".zst", ModuleCompression.zstd), (".gz", .gzip)] {
            let module = try ModuleFile.read(path: plain + suffix)
            #expect(module.compression == format)
            #expect(module.modinfo == original.modinfo)
            #expect(module.signature == original.signature.map { var s = $0; s.placement = .signedThenCompressed; return s })
            #expect(module.versions == original.versions)
        }
    }

    /// Bytes after the compressed stream: refused as `xz -t`, `zstd -t` and `gzip -t` refuse
    /// them (modinfo too), in every format and through every reader.
    @Test func trailingDataAfterTheStreamIsRefused() async throws {
        let scratch = try ScratchDirectory()
        let plain = scratch.write("m.ko", try bytes(Self.plainPath))
        let tools: [(String, [String])] = [(".xz", ["xz", "-k", "--check=crc32"]), (".zst", ["zstd", "-q", "-k"]), (".gz", ["gzip", "-k", "-n"])]
        for (suffix, tool) in tools {
            try await runTool(tool + [plain])
            let compressed = try bytes(plain + suffix)
            #expect(try ModuleFile.read(path: plain + suffix).compression != .none)
            for tail in [Array("junk".utf8), [0x00], Array(compressed.prefix(64))] {
                let path = scratch.write("tail\(tail.count)\(suffix)", compressed + tail)
                expectError(path, containing: "\(tail.count) byte\(tail.count == 1 ? "" : "s") of trailing data after the end of the stream")
                #expect(throws: ModuleReadError.self) { _ = try LoaderFacts.read(path: path) }
                #expect(throws: ModuleReadError.self) { _ = try ModuleImage.bytesForLoading(path: path, kernelDecompresses: .none) }
            }
        }
        // xz's stream padding (NULs in fours) is part of the format: xz -t accepts it.
        let padded = scratch.write("padded.ko.xz", try bytes(plain + ".xz") + [0, 0, 0, 0, 0, 0, 0, 0])
        #expect(try ModuleFile.read(path: padded).modinfo == (try ModuleFile.read(path: plain)).modinfo)
    }

    @Test func signatureAppendedAfterCompressing() async throws {
        // A signature outside the xz stream: readable, but reported as invisible to the kernel.
        let scratch = try ScratchDirectory()
        let plain = try ModuleFile.read(path: Self.plainPath)
        let signed = try #require(plain.signature)
        let image = try bytes(Self.plainPath)
        let unsigned = Array(image.prefix(image.count - signed.trailerSize))
        let trailer = Array(image.suffix(signed.trailerSize))
        let unsignedPath = scratch.write("m.ko", unsigned)
        try await runTool(["xz", "-k", "--check=crc32", unsignedPath])
        let compressed = try bytes(unsignedPath + ".xz")
        let path = scratch.write("m-outer.ko.xz", compressed + trailer)
        let module = try ModuleFile.read(path: path)
        #expect(module.signature?.placement == .compressedThenSigned)
        #expect(module.signature?.signature == signed.signature)
        #expect(try ModuleFile.read(path: unsignedPath + ".xz").signature == nil)
        // The modinfo view lists no signature fields: the kernel would not see one.
        #expect(module.values("signer").isEmpty)
    }
}

/// A FIFO named like a module is refused from its stat, never opened for a blocking read
/// (which would wait forever for a writer).
@Suite struct NonRegularFileTests {
    @Test func fifoIsRefusedWithoutBlocking() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nvbuild-fifo-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        for name in ["pipe.ko", "pipe.ko.xz"] {
            let path = directory.appendingPathComponent(name).path
            #expect(mkfifo(path, 0o600) == 0)
            #expect(throws: ModuleReadError(path: path, .notRegularFile)) { _ = try ModuleFile.read(path: path) }
            #expect(throws: ModuleReadError(path: path, .notRegularFile)) { _ = try LoaderFacts.read(path: path) }
        }
    }
}
