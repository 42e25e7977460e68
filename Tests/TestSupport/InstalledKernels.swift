import Foundation
import KernelTree

/// The standard Debian 6.1 and 6.12 kernels scripts/setup installs, found on the
/// machine rather than named here: the newest installed ABI of each series.
public enum InstalledKernels {
    public static let standard: [String] = {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/lib/modules")) ?? []
        func newest(_ pattern: String) -> String? {
            names.filter { $0.range(of: pattern, options: .regularExpression) != nil }
                .filter { FileManager.default.fileExists(atPath: "/lib/modules/\($0)/build/Makefile") }
                .sorted { $0.compare($1, options: .numeric) == .orderedAscending }.last
        }
        return [newest(#"^6\.1\.0-[0-9]+-amd64$"#), newest(#"^6\.12\.[0-9]+\+deb12-amd64$"#)].compactMap { $0 }
    }()

    /// Why tests that need the kernel's image (its modules, modules.dep, vmlinuz) cannot
    /// run on `release`, or nil when the image is installed. Headers alone give
    /// /lib/modules/<release>/build but no modules.
    public static func imageProblem(_ release: String) -> String? {
        KernelImage(release: release).problem(release: release).map { "kernel \(release): \($0)" }
    }

    /// Throws the one line of `imageProblem` when the image of `release` is missing, so a
    /// test that needs modules says so instead of failing on a missing file.
    public static func requireImage(_ release: String) throws {
        if let problem = imageProblem(release) { throw MissingImage(description: problem) }
    }

    public struct MissingImage: Error, CustomStringConvertible {
        public let description: String
    }

    /// A module of `release` by its path under kernel/ without compression suffix
    /// (`drivers/usb/storage/usb-storage.ko`), with whichever suffix the kernel uses.
    public static func module(_ release: String, _ relative: String) -> String? {
        ["", ".xz", ".zst", ".gz"].map { "/lib/modules/\(release)/kernel/\(relative)\($0)" }
            .first { FileManager.default.fileExists(atPath: $0) }
    }

    /// The first standard kernel's copy of a module stored with `suffix` ("" for
    /// uncompressed, ".xz", ...): Debian's 6.1 ships plain modules, 6.12 xz ones.
    public static func module(_ relative: String, compressedAs suffix: String) -> String? {
        standard.lazy.compactMap { module($0, relative) }.first { path in
            suffix.isEmpty ? path.hasSuffix(".ko") : path.hasSuffix(".ko" + suffix)
        }
    }
}

/// The fixture tree's golden conftest headers: facts about named kernels, made from
/// the reference flow by scripts/make-fixture-golden.
public enum GoldenFiles {
    public static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/golden").path
    /// The NVIDIA release whose conftest.sh made the golden files (Tests/Fixtures/golden/README.md).
    public static let referenceRelease = "595.45.04"

    /// The golden directory of `release`, or the one line that says how to make it.
    public static func directory(for release: String) -> Result<String, MissingGolden> {
        let dir = root + "/" + release
        if FileManager.default.fileExists(atPath: dir + "/functions.h") { return .success(dir) }
        return .failure(MissingGolden(release: release))
    }

    public struct MissingGolden: Error, CustomStringConvertible {
        public let release: String
        public var description: String {
            "no golden files for kernel \(release): make them from the reference flow with "
                + "`bash scripts/make-fixture-golden UPSTREAM/kernel-open \(release)` "
                + "(UPSTREAM: NVIDIA/open-gpu-kernel-modules at \(referenceRelease)) and commit Tests/Fixtures/golden/\(release)"
        }
    }
}
