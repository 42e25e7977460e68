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
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let built = try await CLI.buildPlainModule(release: release, in: scratch)
        let compress = try await ProcessRunner().run(["zstd", "-q", "--rm", built])
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

    /// A `.ko.xz` as xz makes it by default (CRC64 check) and as the kernel's build makes it
    /// (CRC32). kmod 31 and later hand the file to a kernel that unpacks xz itself, whose
    /// decoder refuses the CRC64 stream; kmod 30 decompresses in user space, so it loads.
    /// Each boot is predicted by verify with the same --kmod-version.
    @Test(arguments: InstalledKernels.standard)
    func compressedHandoffAsTheKernelDecides(release: String) async throws {
        let scratch = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let built = try await CLI.buildPlainModule(release: release, in: scratch)
        var copies: [String] = []
        for check in ["crc64", "crc32"] {
            try FileManager.default.createDirectory(atPath: "\(scratch)/\(check)", withIntermediateDirectories: true)
            let copy = "\(scratch)/\(check)/nvbuild_plain.ko"
            try FileManager.default.copyItem(atPath: built, toPath: copy)
            let xz = try await ProcessRunner().run(["xz", "--check=\(check)", copy])
            try #require(xz.succeeded, "xz: \(xz.standardError)")
            copies.append(copy + ".xz")
        }
        let config = try String(contentsOfFile: "/lib/modules/\(release)/build/.config", encoding: .utf8)
        let unpacksXZ = config.contains("\nCONFIG_MODULE_DECOMPRESS=y\n") && config.contains("\nCONFIG_MODULE_COMPRESS_XZ=y\n")

        var boots = [("31", copies)]
        if unpacksXZ { boots.append(("30", [copies[0]])) }
        for (kmod, modules) in boots {
            let common = ["--kernel", release, "--no-deps", "--json", "--kmod-version", kmod]
            let tried = try Self.results(CLI.run(["modules", "try", "--timeout", "240"] + common + modules).stdout)
            let predicted = try Self.results(CLI.run(["modules", "verify"] + common + modules).stdout)
            try #require(tried.results.count == modules.count && predicted.results.count == modules.count, "kmod \(kmod): \(tried) / \(predicted)")
            for (kernel, prediction) in zip(tried.results, predicted.results) {
                #expect(kernel.loads == prediction.loads && kernel.errno == prediction.errno, "kmod \(kmod): try \(kernel) / verify \(prediction)")
                #expect(Array(kernel.messages.prefix(prediction.messages.count)) == prediction.messages, "kmod \(kmod): try \(kernel.messages) / verify \(prediction.messages)")
            }
            switch (kmod, unpacksXZ) {
            case ("31", true):
                // The kernel's decoder refuses CRC64 (EINVAL), then loads the CRC32 copy.
                #expect(!tried.results[0].loads && tried.results[0].errno == 22, "\(tried.results[0])")
                #expect(tried.results[0].messages.contains { $0.contains("decompression failed with status 6") }, "\(tried.results[0].messages)")
                #expect(tried.results[1].loads, "\(tried.results[1])")
            case ("31", false):
                // No in-kernel decompression: kmod 31 decompresses in user space too.
                #expect(tried.results[0].loads && tried.results[1].errno == 17, "\(tried.results)")
            default:
                #expect(tried.results[0].loads, "\(tried.results[0])")
            }
        }
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
