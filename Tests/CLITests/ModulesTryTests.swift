import Foundation
import NVBuildSupport
import TestSupport
import Testing

/// `modules try` with a zstd-compressed module. Neither Debian kernel unpacks zstd
/// itself (6.1 has no CONFIG_MODULE_DECOMPRESS, 6.12 decompresses xz only), so the
/// module reaches the guest only if nvbuild decompresses it first.
@Suite(.serialized) struct ModulesTryTests {
    @Test(arguments: InstalledKernels.standard)
    func zstdModuleLoadsUnderQemu(release: String) async throws {
        let scratch = CLI.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        for file in ["Kbuild", "nvbuild_plain.c"] {
            try FileManager.default.copyItem(
                atPath: CLI.repository + "/Tests/Fixtures/plain-module/" + file, toPath: scratch + "/" + file)
        }
        let make = try await ProcessRunner().run(["make", "-C", "/lib/modules/\(release)/build", "M=\(scratch)", "modules"])
        try #require(make.succeeded, "building the plain module for \(release): \(make.standardError)")
        let compress = try await ProcessRunner().run(["zstd", "-q", "--rm", scratch + "/nvbuild_plain.ko"])
        try #require(compress.succeeded, "zstd: \(compress.standardError)")
        let module = scratch + "/nvbuild_plain.ko.zst"
        try #require(FileManager.default.fileExists(atPath: module))

        let tried = try CLI.run(["modules", "try", "--kernel", release, "--no-deps", "--json", "--timeout", "240", module])
        #expect(tried.status == 0, "\(tried.stderr)\n\(tried.stdout)")
        let trial = try Self.results(tried.stdout)
        #expect(trial.method == "qemu")
        #expect(trial.accelerator == "kvm" || trial.accelerator == "tcg")
        if Self.kvmOpens() == false { #expect(trial.accelerator == "tcg", "no usable /dev/kvm, yet \(trial.accelerator ?? "none")") }
        let loaded = try #require(trial.results.first)
        #expect(trial.results.count == 1)
        #expect(loaded.loads, "\(loaded.messages)")
        #expect(loaded.messages.contains("nvbuild_plain: loaded"), "\(loaded.messages)")

        // The simulation reads the same compressed file and predicts the kernel's own messages.
        let verified = try CLI.run(["modules", "verify", "--kernel", release, "--no-deps", "--json", module])
        #expect(verified.status == 0, "\(verified.stderr)")
        let predicted = try #require(try Self.results(verified.stdout).results.first)
        #expect(predicted.loads == loaded.loads && predicted.errno == loaded.errno)
        #expect(Array(loaded.messages.prefix(predicted.messages.count)) == predicted.messages, "verify \(predicted.messages) / try \(loaded.messages)")
    }

    /// --accel: tcg is honoured and said in text and JSON; kvm runs under KVM, or is an
    /// environment error in one line where qemu cannot use it; anything else is a usage error.
    @Test func explicitAccelerators() throws {
        let release = try CLI.standardKernel("6.12")
        try InstalledKernels.requireImage(release)
        // A module without dependencies, found in modules.dep; whether it loads does not matter here.
        let dependencies = try String(contentsOfFile: "/lib/modules/\(release)/modules.dep", encoding: .utf8)
        let leaf = try #require(dependencies.split(separator: "\n").first { $0.hasSuffix(":") }.map { "/lib/modules/\(release)/" + $0.dropLast() })
        let tcg = try CLI.run(["modules", "try", "--kernel", release, "--accel", "tcg", leaf])
        #expect(tcg.status == 0 || tcg.status == 1, "\(tcg.stderr)\n\(tcg.stdout)")
        #expect(tcg.stdout.hasPrefix("qemu accelerator: tcg\n"), "\(tcg.stdout)")
        #expect(!tcg.stderr.contains("KVM"), "\(tcg.stderr)")

        let kvm = try CLI.run(["modules", "try", "--kernel", release, "--accel", "kvm", "--json", leaf])
        if kvm.status != 2 {
            #expect(try Self.results(kvm.stdout).accelerator == "kvm")
        } else {
            // No usable /dev/kvm, or a KVM qemu cannot run the guest under (nested virtualisation).
            #expect(kvm.status == 2, "exit \(kvm.status): \(kvm.stderr)")
            #expect(kvm.stderr.split(separator: "\n").count == 1 && kvm.stderr.contains("--accel tcg"), "\(kvm.stderr)")
            #expect(kvm.stdout.isEmpty)
        }
        if Self.kvmOpens() == false { #expect(kvm.status == 2 && kvm.stderr.contains("/dev/kvm"), "\(kvm.stderr)") }

        let bogus = try CLI.run(["modules", "try", "--kernel", release, "--accel", "hvf", leaf])
        #expect(bogus.status == 2 && bogus.stderr.contains("--accel"), "\(bogus.stderr)")
    }

    /// Whether this process may open /dev/kvm read-write (what qemu needs for -accel kvm).
    static func kvmOpens() -> Bool {
        let fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        if fd >= 0 { close(fd) }
        return fd >= 0
    }

    struct Report: Decodable {
        struct Result: Decodable {
            var module: String
            var loads: Bool
            var errno: Int32
            var messages: [String]
        }
        var method: String
        var accelerator: String?
        var results: [Result]
    }

    static func results(_ json: String) throws -> Report {
        try JSONDecoder().decode(Report.self, from: Data(json.utf8))
    }
}
