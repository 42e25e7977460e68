import Foundation
import NVBuildSupport
import TestSupport
import Testing

/// `nvbuild build --sign-key/--sign-cert/--sign`: every module of every kernel signed with
/// that kernel's own sign-file and hash after modpost, the signer in --json and the table,
/// and every problem with the key found before anything is built.
@Suite struct BuildSignTests {
    static func plainTree(in root: String) throws -> String {
        let tree = root + "/plain"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        for file in ["Kbuild", "Makefile", "nvbuild_plain.c"] {
            try FileManager.default.copyItem(atPath: CLI.repository + "/Tests/Fixtures/plain-module/" + file, toPath: tree + "/" + file)
        }
        return tree
    }

    static func makeKey(_ name: String, in root: String) async throws -> (key: String, certificate: String) {
        let key = "\(root)/\(name).key", certificate = "\(root)/\(name).crt"
        let made = try await ProcessRunner().run([
            "openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=\(name)", "-days", "2",
            "-keyout", key, "-out", certificate,
        ])
        try #require(made.succeeded, "openssl req: \(made.standardError)")
        return (key, certificate)
    }

    static func configuredHash(_ release: String) throws -> String? {
        let config = try String(contentsOfFile: "/lib/modules/\(release)/build/.config", encoding: .utf8)
        return config.split(separator: "\n").first { $0.hasPrefix("CONFIG_MODULE_SIG_HASH=") }
            .map { $0.dropFirst("CONFIG_MODULE_SIG_HASH=".count).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
    }

    @Test func signsEveryKernelsModulesWithItsOwnHash() async throws {
        let kernels = InstalledKernels.standard
        try #require(!kernels.isEmpty, "no standard kernel installed (scripts/setup)")
        let root = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let tree = try Self.plainTree(in: root)
        let key = try await Self.makeKey("nvbuild build signing test", in: root)
        let out = try CLI.run(
            ["build", "--tree", tree, "--build-dir", root + "/build", "--json", "--sign-key", key.key, "--sign-cert", key.certificate]
                + kernels.flatMap { ["--kernel", $0] })
        #expect(out.status == 0, "\(out.stderr)")
        let rows = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(rows.count == kernels.count)
        for row in rows {
            let release = try #require(row["release"] as? String)
            let module = try #require((row["modules"] as? [[String: Any]])?.first)
            #expect(module["signer"] as? String == "CN=nvbuild build signing test", "\(module)")
            #expect(module["signatureHash"] as? String == (try Self.configuredHash(release)))
            #expect(module["signingCertificate"] as? String == key.certificate)
            let path = try #require(module["path"] as? String)
            let inspected = try CLI.run(["inspect", "--verify-signature", key.certificate, path])
            #expect(inspected.status == 0 && inspected.stdout.contains("valid"), "\(inspected.stdout)\(inspected.stderr)")
            // Enrolled (--trust), the module loads on a kernel that enforces signatures.
            if InstalledKernels.imageProblem(release) == nil {
                let verified = try CLI.run([
                    "modules", "verify", "--kernel", release, "--no-deps", "--no-mok", "--cmdline", "module.sig_enforce=1",
                    "--trust", key.certificate, path,
                ])
                #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
            }
        }
        // The table names the signer and the hash.
        let table = try CLI.run(
            ["build", "--tree", tree, "--build-dir", root + "/build", "--kernel", kernels[0], "--sign-key", key.key, "--sign-cert", key.certificate])
        #expect(table.status == 0, "\(table.stderr)")
        let hash = try Self.configuredHash(kernels[0]) ?? "?"
        #expect(table.stdout.contains("SIGNER") && table.stdout.contains("CN=nvbuild build signing test (\(hash))"), "\(table.stdout)")

        // A build without signing in the same folder: make does not relink, and the signature
        // the last build appended is removed, so the table's "no signer" is true.
        let unsigned = try CLI.run(["build", "--tree", tree, "--build-dir", root + "/build", "--kernel", kernels[0], "--json"])
        #expect(unsigned.status == 0, "\(unsigned.stderr)")
        let row = try #require((try JSONSerialization.jsonObject(with: Data(unsigned.stdout.utf8)) as? [[String: Any]])?.first)
        let module = try #require((row["modules"] as? [[String: Any]])?.first)
        #expect(module["signer"] == nil)
        let inspected = try CLI.run(["inspect", "--verify-signature", key.certificate, try #require(module["path"] as? String)])
        #expect(inspected.stdout.contains("unsigned"), "\(inspected.stdout)")
    }

    @Test func keyProblemsStopBeforeTheBuild() async throws {
        let release = try #require(InstalledKernels.standard.first, "no standard kernel installed (scripts/setup)")
        let root = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let tree = try Self.plainTree(in: root)
        let one = try await Self.makeKey("one", in: root)
        let two = try await Self.makeKey("two", in: root)
        let build = root + "/build"
        let cases: [(arguments: [String], status: Int32, expected: String)] = [
            (["--sign-key", root + "/missing.key", "--sign-cert", one.certificate], 2, root + "/missing.key: no such signing key file"),
            (["--sign-key", two.key, "--sign-cert", one.certificate], 2, "two.key does not match the certificate"),
            (["--sign-key", one.key], 2, "--sign-key needs --sign-cert"),
            (["--sign", "--sign-key", one.key, "--sign-cert", one.certificate], 2, "give either --sign or --sign-key"),
        ]
        for (arguments, status, expected) in cases {
            let out = try CLI.run(["build", "--tree", tree, "--build-dir", build, "--kernel", release] + arguments)
            #expect(out.status == status, "\(arguments): \(out.stderr)")
            #expect(out.stderr.contains(expected) && out.stderr.split(separator: "\n").count == 1, "\(arguments): \(out.stderr)")
            #expect(!FileManager.default.fileExists(atPath: build), "\(arguments) built before refusing")
        }
        // --sign reads DKMS's settings; where its key is missing, that file is named.
        if !FileManager.default.fileExists(atPath: "/var/lib/dkms/mok.key") {
            let out = try CLI.run(["build", "--tree", tree, "--build-dir", build, "--kernel", release, "--sign"])
            #expect(out.status == 2 && out.stderr.contains("mok.key: no such signing key file"), "\(out.stderr)")
            #expect(!FileManager.default.fileExists(atPath: build))
        }
    }
}
