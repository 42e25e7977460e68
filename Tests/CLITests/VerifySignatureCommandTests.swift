import Foundation
import NVBuildSupport
import TestSupport
import Testing

/// `nvbuild inspect --verify-signature`: the verdict lines, the JSON field and the exit
/// status, on Debian's signed modules with the certificates built into their kernel image.
@Suite struct VerifySignatureCommandTests {
    /// The first few modules of `release`, sorted, as the machine has them.
    static func modules(_ release: String, count: Int) throws -> [String] {
        let root = "/lib/modules/\(release)/kernel"
        let walker = try #require(FileManager.default.enumerator(atPath: root))
        var found: [String] = []
        while let relative = walker.nextObject() as? String {
            if relative.hasSuffix(".ko") || relative.hasSuffix(".ko.xz") || relative.hasSuffix(".ko.zst") { found.append(root + "/" + relative) }
        }
        return Array(found.sorted().prefix(count))
    }

    @Test(arguments: InstalledKernels.standard)
    func debianModulesAreValidAgainstTheirImage(release: String) async throws {
        try InstalledKernels.requireImage(release)
        let image = "/boot/vmlinuz-\(release)"
        let modules = try Self.modules(release, count: 3)
        try #require(modules.count == 3)

        let text = try CLI.run(["inspect", "--verify-signature", image] + modules)
        #expect(text.status == 0, "\(text.stderr)")
        let verdicts = text.stdout.split(separator: "\n").filter { $0.hasPrefix("verification:") }
        #expect(verdicts.count == modules.count)
        #expect(verdicts.allSatisfy { $0.contains("valid: signed by CN=") && $0.contains("\(image) (built-in #") }, "\(verdicts)")

        let json = try CLI.run(["inspect", "--json", "--verify-signature", image] + modules)
        #expect(json.status == 0, "\(json.stderr)")
        for line in json.stdout.split(separator: "\n") {
            let document = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let verification = try #require(document["signatureVerification"] as? [String: Any], "\(line.prefix(200))")
            let signature = try #require(document["signature"] as? [String: Any])
            #expect(verification["verdict"] as? String == "valid")
            #expect(verification["keySerial"] as? String == signature["keyID"] as? String)
        }
        // Without the flag the field is absent.
        let plain = try CLI.run(["inspect", "--json", modules[0]])
        #expect(!plain.stdout.contains("signatureVerification"))
    }

    @Test func unknownKeyIsStatusOneAndABadCertificateIsStatusTwo() async throws {
        let release = try #require(InstalledKernels.standard.first, "no standard kernel installed (scripts/setup)")
        try InstalledKernels.requireImage(release)
        let modules = try Self.modules(release, count: 2)
        let scratch = CLI.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let made = try await ProcessRunner().run(
            ["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=nvbuild-cli", "-days", "2",
             "-keyout", scratch + "/test.key", "-out", scratch + "/test.crt"])
        try #require(made.succeeded, "\(made.standardError)")

        let unknown = try CLI.run(["inspect", "--verify-signature", scratch + "/test.crt"] + modules)
        #expect(unknown.status == 1)
        let verdicts = unknown.stdout.split(separator: "\n").filter { $0.hasPrefix("verification:") }
        #expect(verdicts.count == 2 && verdicts.allSatisfy { $0.contains("signed by an unknown key: issuer CN=") }, "\(verdicts)")
        #expect(unknown.stderr.contains("2 of 2 modules did not verify against \(scratch)/test.crt"), "\(unknown.stderr)")

        let bad = try CLI.run(["inspect", "--verify-signature", scratch + "/test.key", modules[0]])
        #expect(bad.status == 2)
        #expect(bad.stdout.isEmpty)
        let lines = bad.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains("\(scratch)/test.key: no CERTIFICATE block"), "\(bad.stderr)")

        let usage = try CLI.run(["inspect", "-F", "name", "--verify-signature", scratch + "/test.crt", modules[0]])
        #expect(usage.status == 2, "\(usage.stderr)")
    }
}
