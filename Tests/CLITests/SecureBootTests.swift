import Foundation
import Kbuild
import KernelTree
import NVBuildSupport
import TestSupport
import Testing

/// Ground truth for `modules verify --secure-boot`: the real kernel under qemu, booted with
/// `module.sig_enforce=1` (`try --sig-enforce`) and with `lockdown=integrity` (`try --lockdown`,
/// what UEFI Secure Boot does to a Debian kernel), refuses the fixture module unsigned, signed
/// with a key made here by `openssl req` (unknown to the kernel), and signed then changed;
/// it refuses an in-tree module Debian signed once a byte of it changed, and loads that
/// module as installed. verify must predict each verdict, errno and message.
@Suite(.serialized) struct SecureBootTests {
    struct Prepared {
        var scratch: String
        /// In load order: unsigned, test-key signed, test-key signed then changed, Debian's
        /// module changed, Debian's module as installed.
        var modules: [String]
        var certificate: String
    }

    static func prepare(_ release: String) async throws -> Prepared {
        try InstalledKernels.requireImage(release)
        let scratch = CLI.temporaryDirectory()
        let built = try await CLI.buildPlainModule(release: release, in: scratch + "/build")

        let key = scratch + "/test.key", certificate = scratch + "/test.crt"
        let request = try await ProcessRunner().run([
            "openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=nvbuild secure boot test",
            "-days", "2", "-keyout", key, "-out", certificate,
        ])
        try #require(request.succeeded, "openssl req: \(request.standardError)")

        var modules: [String] = []
        func copy(_ source: String, as kind: String) throws -> String {
            try FileManager.default.createDirectory(atPath: "\(scratch)/\(kind)", withIntermediateDirectories: true)
            let path = "\(scratch)/\(kind)/" + URL(fileURLWithPath: source).lastPathComponent
            try FileManager.default.copyItem(atPath: source, toPath: path)
            return path
        }
        modules.append(try copy(built, as: "unsigned"))
        let target = try KernelDiscovery().kernel(release: release)
        let signer = try await ModuleSigner.prepare(for: target, key: key, certificate: certificate, scratchDirectory: scratch)
        let signed = try copy(built, as: "signed")
        try await signer.sign(signed)
        modules.append(signed)
        let tampered = try copy(signed, as: "tampered")
        try Self.changeOneByte(of: tampered, in: "nvbuild plain obj-m fixture")
        modules.append(tampered)

        let debian = try Self.debianModule(release)
        let plainDebian = scratch + "/debian-tampered/" + URL(fileURLWithPath: debian).lastPathComponent
            .replacingOccurrences(of: ".xz", with: "").replacingOccurrences(of: ".zst", with: "")
        try FileManager.default.createDirectory(atPath: scratch + "/debian-tampered", withIntermediateDirectories: true)
        if debian.hasSuffix(".ko") {
            try FileManager.default.copyItem(atPath: debian, toPath: plainDebian)
        } else {
            let tool = debian.hasSuffix(".xz") ? "xz" : "zstd"
            let unpacked = try await ProcessRunner().run([tool, "-dc", debian], standardOutputPath: plainDebian)
            try #require(unpacked.succeeded, "\(tool) -dc \(debian): \(unpacked.standardError)")
        }
        try Self.changeOneByte(of: plainDebian, in: "GCC: (Debian")
        modules.append(plainDebian)
        modules.append(debian)
        return Prepared(scratch: scratch, modules: modules, certificate: certificate)
    }

    /// Flips the case of the last letter of `text` in the file's bytes (a .modinfo string):
    /// the ELF stays valid, the signed content changes.
    static func changeOneByte(of path: String, in text: String) throws {
        var bytes = [UInt8](try #require(FileManager.default.contents(atPath: path)))
        let needle = Array(text.utf8)
        let start = try #require(
            (0...(bytes.count - needle.count)).first { bytes[$0..<($0 + needle.count)].elementsEqual(needle) }, "\(text) not in \(path)")
        bytes[start + needle.count - 1] ^= 0x20
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// An in-tree module of `release` that loads on any machine: an NLS table without
    /// dependencies, as modules.dep lists it.
    static func debianModule(_ release: String) throws -> String {
        let dependencies = try String(contentsOfFile: "/lib/modules/\(release)/modules.dep", encoding: .utf8)
        let line = try #require(
            dependencies.split(separator: "\n").filter { $0.hasPrefix("kernel/fs/nls/nls_iso8859-") && $0.hasSuffix(":") }.sorted().first,
            "kernel \(release) has no NLS module without dependencies in modules.dep")
        return "/lib/modules/\(release)/" + line.dropLast()
    }

    struct Report: Decodable {
        struct Result: Decodable, Equatable {
            var module: String
            var loads: Bool
            var errno: Int32
            var messages: [String]
        }
        var results: [Result]
    }

    static func report(_ output: CLI.Output, _ what: String) throws -> Report {
        #expect(output.status == 1, "\(what) exit \(output.status): \(output.stderr)")
        return try JSONDecoder().decode(Report.self, from: Data(output.stdout.utf8))
    }

    static let names = ["unsigned", "signed with an unknown key", "signed, then changed", "Debian's, changed", "Debian's"]

    /// The verdicts of one boot, as the closing table shows them.
    static func table(_ release: String, _ mode: String, _ report: Report) -> String {
        zip(names, report.results).map { name, result in
            "\(release) \(mode) | \(name) | \(result.loads ? "loads" : "refused") | \(result.loads ? "-" : CLIErrno.name(result.errno)) | \(result.messages.joined(separator: " / "))"
        }.joined(separator: "\n")
    }

    @Test(arguments: InstalledKernels.standard)
    func kernelAndPredictionAgree(release: String) async throws {
        let prepared = try await Self.prepare(release)
        defer { try? FileManager.default.removeItem(atPath: prepared.scratch) }
        let modules = prepared.modules
        let common = ["--kernel", release, "--no-deps", "--json"]

        for (mode, tryFlags, verifyFlags) in [
            ("sig_enforce", ["--sig-enforce"], ["--cmdline", "module.sig_enforce=1"]),
            ("lockdown", ["--lockdown"], ["--secure-boot"]),
            // Secure Boot with enforcement: enforcement is checked before lockdown.
            ("both", ["--sig-enforce", "--lockdown"], ["--secure-boot", "--cmdline", "module.sig_enforce=1"]),
        ] {
            let tried = try Self.report(CLI.run(["modules", "try", "--timeout", "300"] + tryFlags + common + modules), "try \(mode)")
            let predicted = try Self.report(CLI.run(["modules", "verify", "--no-mok"] + verifyFlags + common + modules), "verify \(mode)")
            print(Self.table(release, mode, tried))
            try #require(tried.results.count == 5 && predicted.results.count == 5)
            #expect(tried.results.map(\.loads) == [false, false, false, false, true], "\(Self.table(release, mode, tried))")
            for (index, name) in Self.names.enumerated() {
                let kernel = tried.results[index], prediction = predicted.results[index]
                #expect(prediction.loads == kernel.loads && prediction.errno == kernel.errno,
                        "\(release) \(mode), \(name): kernel \(kernel.errno) \(kernel.messages), verify \(prediction.errno) \(prediction.messages)")
                #expect(prediction.messages == kernel.messages, "\(release) \(mode), \(name): kernel \(kernel.messages), verify \(prediction.messages)")
            }
        }

        // The project key enrolled (--trust): its module is valid, the changed copy is refused
        // whatever is enforced, and the kernel's messages name nothing.
        let trusted = try CLI.run(["modules", "verify", "--no-mok", "--secure-boot", "--trust", prepared.certificate] + common + modules)
        let withKey = try Self.report(trusted, "verify --trust")
        #expect(withKey.results.map(\.loads) == [false, true, false, false, true])
        #expect(withKey.results.map(\.errno) == [1, 0, 129, 129, 0])

        // Text: the signer, the key and the remedy.
        let text = try CLI.run(["modules", "verify", "--no-mok", "--secure-boot", "--kernel", release, "--no-deps", modules[1]])
        #expect(text.status == 1)
        #expect(text.stdout.contains("signatures: not enforced, lockdown integrity"), "\(text.stdout)")
        #expect(text.stdout.contains("signed by a key the kernel does not trust: issuer CN=nvbuild secure boot test"), "\(text.stdout)")
        #expect(text.stdout.contains("mokutil --import"), "\(text.stdout)")
    }

    /// Without any signature option an unsigned module still loads with a taint.
    @Test func withoutSecureBootUnsignedTaints() async throws {
        let release = try #require(InstalledKernels.standard.first, "no standard kernel installed (scripts/setup)")
        try InstalledKernels.requireImage(release)
        let scratch = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let built = try await CLI.buildPlainModule(release: release, in: scratch)
        let verified = try CLI.run(["modules", "verify", "--kernel", release, "--no-deps", built])
        #expect(verified.status == 0, "\(verified.stderr)")
        #expect(verified.stdout.contains("module verification failed: signature and/or required key missing - tainting kernel"), "\(verified.stdout)")
        #expect(!verified.stdout.contains("signatures:"))

        // A --trust that is not a certificate is one line naming it.
        let bogus = try CLI.run(["modules", "verify", "--kernel", release, "--no-deps", "--trust", scratch + "/Kbuild", scratch + "/nvbuild_plain.ko"])
        #expect(bogus.status == 2)
        #expect(bogus.stderr.contains(scratch + "/Kbuild") && bogus.stderr.split(separator: "\n").count == 1, "\(bogus.stderr)")
    }
}

enum CLIErrno {
    static func name(_ value: Int32) -> String {
        [1: "EPERM", 61: "ENODATA", 65: "ENOPKG", 74: "EBADMSG", 126: "ENOKEY", 129: "EKEYREJECTED"][value] ?? "errno \(value)"
    }
}
