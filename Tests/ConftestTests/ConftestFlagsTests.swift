import Foundation
import KernelTree
import NVBuildSupport
import Testing

@testable import Conftest

/// The compile flags are computed as data; they must equal what NVIDIA's Kbuild passed
/// to conftest.sh for 595.45.04 on the 6.12 Debian headers (recorded in
/// Tests/Fixtures/reference), up to the PID conftest.sh embeds and the kernel release.
@Suite struct ConftestFlagsTests {
    @Test func flagsEqualTheKbuildConftestFlagsOn612() async throws {
        // NV_CONFTEST_CFLAGS-<driver release>-<kernel release it was recorded on>.txt
        let directory = Repo.root + "/Tests/Fixtures/reference"
        let prefix = "NV_CONFTEST_CFLAGS-595.45.04-"
        let name = try #require(try FileManager.default.contentsOfDirectory(atPath: directory).first { $0.hasPrefix(prefix + "6.12.") })
        let recordedOn = String(name.dropFirst(prefix.count).dropLast(".txt".count))
        let observed = try String(contentsOfFile: directory + "/" + name, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let kernel = try #require(Repo.kernels().first { $0.release.hasPrefix("6.12.") })

        var tree = try ConftestRequests.read(path: Repo.fixtureTree)
        tree.driverVersion = "595.45.04"
        let compiler = ConftestFlags.compilerCommand(kernel: kernel, override: nil, environment: [:])
        let facts = try await ConftestFlags.CompilerFacts.query(compiler: compiler)
        let flags = ConftestFlags.baseFlags(kernel: kernel, compiler: facts, autoconf: ConftestFlags.autoconfPath(kernel: kernel), environment: [:])
            + ConftestFlags.kbuildFlags(tree: tree, kernel: kernel, environment: [:])

        let mine = flags.map { $0.replacingOccurrences(of: Repo.fixtureTree, with: "<tree>") }
        let expected = observed
            .replacingOccurrences(of: recordedOn, with: kernel.release)
            .split(separator: " ").map(String.init)
            .map { $0.replacingOccurrences(of: #"#conftest[0-9]+"#, with: "#conftest", options: .regularExpression) }
        #expect(mine == expected)
    }
}

@Suite struct CompilerIdentityTests {
    /// The kernels' own compiler, whatever scripts/setup installed.
    static var kernelCompiler: CompilerCommand? { Repo.kernels().lazy.compactMap(\.installedCompiler).first }

    @Test(.enabled(if: kernelCompiler != nil)) func launchersDoNotChangeTheIdentity() async throws {
        let compiler = try #require(Self.kernelCompiler)
        let plain = try await ResultCache.compilerIdentity(compiler)
        // Neither launcher needs to be installed: the identity never runs them.
        var ccache = compiler
        ccache.launchers = ["ccache"]
        var distcc = compiler
        distcc.launchers = ["distcc"]
        #expect(try await ResultCache.compilerIdentity(ccache) == plain)
        #expect(try await ResultCache.compilerIdentity(distcc) == plain)
        var other = compiler
        other.arguments = ["-m32"]
        #expect(try await ResultCache.compilerIdentity(other) != plain)
    }

    /// gcc-12 and x86_64-linux-gnu-gcc-12 are one binary under two names (Debian's symlink).
    @Test(.enabled(if: ProcessRunner.lookup("gcc-12") != nil && ProcessRunner.lookup("x86_64-linux-gnu-gcc-12") != nil))
    func oneBinaryUnderTwoNamesIsOneCompiler() async throws {
        let gcc = try await ResultCache.compilerIdentity(try #require(CompilerCommand(parsing: "ccache gcc-12")))
        let triplet = try await ResultCache.compilerIdentity(try #require(CompilerCommand(parsing: "distcc x86_64-linux-gnu-gcc-12")))
        #expect(gcc == triplet)
        #expect(try await ResultCache.compilerIdentity(try #require(CompilerCommand(parsing: "gcc-12"))) == gcc)
    }
}
