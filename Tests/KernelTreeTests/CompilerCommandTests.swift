import Foundation
import Testing

@testable import KernelTree

@Suite struct CompilerCommandTests {
    @Test func launchersAreSeparatedFromTheCompiler() throws {
        let ccache = try #require(CompilerCommand(parsing: "ccache gcc-12"))
        #expect(ccache == CompilerCommand(launchers: ["ccache"], compiler: "gcc-12"))
        #expect(ccache.argv == ["ccache", "gcc-12"])

        let distcc = try #require(CompilerCommand(parsing: "/usr/bin/distcc x86_64-linux-gnu-gcc-12 -m64"))
        #expect(distcc.launchers == ["/usr/bin/distcc"])
        #expect(distcc.compiler == "x86_64-linux-gnu-gcc-12")
        #expect(distcc.arguments == ["-m64"])
        #expect(distcc.argv == ["/usr/bin/distcc", "x86_64-linux-gnu-gcc-12", "-m64"])

        // Two launchers in a row, the outer one with an option of its own.
        let stacked = try #require(CompilerCommand(parsing: "ccache -s distcc gcc"))
        #expect(stacked.launchers == ["ccache", "-s", "distcc"])
        #expect(stacked.compiler == "gcc")
        #expect(CompilerCommand(parsing: "gcc-12")?.argv == ["gcc-12"])
        #expect(CompilerCommand(parsing: "   ") == nil)
    }

    /// --distcc and --ccache put the real tools in front, configured through their own
    /// environment variables; `local` is what runs steps distcc would keep here anyway.
    @Test func launchesThroughDistccAndCcache() throws {
        let gcc = CompilerCommand(compiler: "x86_64-linux-gnu-gcc-12")
        let distcc = gcc.launched(CompilerLaunch(distccHosts: "w1/8 w2/8"))
        #expect(distcc.argv == ["distcc", "x86_64-linux-gnu-gcc-12"])
        #expect(distcc.environment == ["DISTCC_HOSTS": "w1/8 w2/8"])
        #expect(distcc.isDistributed && distcc.local == gcc)

        let both = gcc.launched(CompilerLaunch(distccHosts: "w1/8", ccache: true))
        #expect(both.argv == ["ccache", "x86_64-linux-gnu-gcc-12"])
        #expect(both.environment == ["DISTCC_HOSTS": "w1/8", "CCACHE_PREFIX": "distcc"])
        #expect(both.isDistributed)
        #expect(both.local == CompilerCommand(launchers: ["ccache"], compiler: "x86_64-linux-gnu-gcc-12"))

        // A launcher CC already names is replaced, not doubled; others stay, with their options.
        let named = try #require(CompilerCommand(parsing: "ccache -s distcc gcc-12 -m64"))
        #expect(named.launched(CompilerLaunch(distccHosts: "w1", ccache: true)).argv == ["ccache", "gcc-12", "-m64"])
        #expect(named.launched(CompilerLaunch(ccache: true)).argv == ["ccache", "distcc", "gcc-12", "-m64"])
        #expect(named.local.argv == ["ccache", "-s", "gcc-12", "-m64"])
        #expect(gcc.launched(CompilerLaunch()) == gcc)
        #expect(CompilerLaunch(distccHosts: "w1", ccache: true).tools == ["ccache", "distcc"])
    }

    /// conftest.sh names each test's source after its process, so no compiler cache can
    /// answer its compiles: the delegated tests run without ccache, keeping distcc.
    @Test func uncachedDropsOnlyCachingLaunchers() throws {
        let gcc = CompilerCommand(compiler: "gcc-12")
        #expect(gcc.launched(CompilerLaunch(ccache: true)).uncached == gcc)
        let both = gcc.launched(CompilerLaunch(distccHosts: "w1/8", ccache: true))
        #expect(both.uncached.argv == ["distcc", "gcc-12"])
        #expect(both.uncached.environment == ["DISTCC_HOSTS": "w1/8"])
        let named = try #require(CompilerCommand(parsing: "sccache -x distcc gcc-12 -m64"))
        #expect(named.uncached.argv == ["distcc", "gcc-12", "-m64"])
    }

    @Test func quotedWordsStayWhole() throws {
        let command = try #require(CompilerCommand(parsing: #"ccache "/opt/my tools/gcc" -DNAME='a b' -DQ=\"x\""#))
        #expect(command.argv == ["ccache", "/opt/my tools/gcc", "-DNAME=a b", #"-DQ="x""#])
        #expect(command.shellText == #"ccache '/opt/my tools/gcc' '-DNAME=a b' '-DQ="x"'"#)
        #expect(CompilerCommand(parsing: command.shellText) == command)
        #expect(CompilerCommand(parsing: "ccache gcc-12")?.shellText == "ccache gcc-12")
    }

    @Test func encodesAsItsArgv() throws {
        let command = CompilerCommand(launchers: ["ccache"], compiler: "gcc-12", arguments: ["-m64"])
        let data = try JSONEncoder().encode(command)
        #expect(String(decoding: data, as: UTF8.self) == #"["ccache","gcc-12","-m64"]"#)
        #expect(try JSONDecoder().decode(CompilerCommand.self, from: data) == command)
    }

    @Test func choosesTheConftestCompilerAsTheMakefileDoes() throws {
        let kernel = try #require(KernelDiscovery().installedKernels().first { $0.compilerInstalled }, "run scripts/setup")
        let own = try #require(kernel.installedCompiler)
        #expect(kernel.conftestCompiler(override: nil, environment: [:]) == own)
        #expect(kernel.conftestCompiler(override: nil, environment: ["CC": "ccache \(own.compiler)"]).launchers == ["ccache"])
        #expect(kernel.conftestCompiler(override: "distcc cc", environment: ["CC": "gcc"]).argv == ["distcc", "cc"])
        #expect(kernel.conftestCompiler(override: "", environment: ["CC": ""]) == own)
    }

    @Test func versionTextLeavesOutTheProgramName() {
        #expect(CompilerCommand.versionWithoutName("gcc-12 (Debian 12.2.0) 12.2.0\nCopyright\n")
            == CompilerCommand.versionWithoutName("x86_64-linux-gnu-gcc-12 (Debian 12.2.0) 12.2.0\nCopyright\n"))
    }
}
