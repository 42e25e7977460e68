import Foundation
import KernelTree
import Testing

/// `ModuleSymvers.forEachExport` is the byte-level reader behind `nvbuild modules`;
/// `init(parsing:)` defines what each line means, so the two must always agree.
@Suite struct ModuleSymversExportsTests {
    private func exports(_ text: String) -> [SymbolExport] {
        var collected: [SymbolExport] = []
        ModuleSymvers.forEachExport(in: text) { collected.append($0) }
        return collected
    }

    @Test func agreesWithFullParserOnInstalledKernels() throws {
        let kernels = KernelDiscovery().installedKernels()
        try #require(!kernels.isEmpty)
        for kernel in kernels {
            let text = try String(contentsOfFile: kernel.moduleSymversPath, encoding: .utf8)
            let reference = ModuleSymvers(parsing: text).exports
            #expect(reference.count > 10_000, "\(kernel.moduleSymversPath)")
            #expect(exports(text) == reference, "\(kernel.moduleSymversPath)")
        }
    }

    @Test func agreesWithFullParserOnOddLines() {
        let samples = [
            "0x1\tsym\tvmlinux\tEXPORT_SYMBOL_GPL\tNS\textra\n",  // namespace, then a sixth field
            "0X1f\tupper\tvmlinux\tEXPORT_SYMBOL\t\n",  // "0X" is not a prefix: not hexadecimal
            "zz\tbad\tvmlinux\tEXPORT_SYMBOL\n",  // not a number: CRC 0
            "0x123456789abcdef01\tlong\tvmlinux\tEXPORT_SYMBOL\n",  // 17 digits: overflow, CRC 0
            "+ff\tsigned\tvmlinux\tEXPORT_SYMBOL\n",
            "0x\tempty\tvmlinux\tEXPORT_SYMBOL\n",
            "0x2\tthree\tfields\n\n\n0x3\tafter\tblank\tEXPORT_SYMBOL\n",  // too few fields; blank lines
            "0x4\tcrlf\tvmlinux\tEXPORT_SYMBOL\r\n0x5\tnext\tvmlinux\tEXPORT_SYMBOL\r\n",  // CRLF: the full parser's rules
            "0x6\tsymb\u{00F6}l\tvmlinux\tEXPORT_SYMBOL_GPL\n",  // non-ASCII
            "0x7\tunterminated\tdrivers/x-y\tEXPORT_SYMBOL",
        ]
        for sample in samples {
            #expect(exports(sample) == ModuleSymvers(parsing: sample).exports, "\(sample.debugDescription)")
        }
    }
}

/// `KernelConfig(parsing:)` splits ASCII text byte by byte; the Character-wise reading
/// below (what it did before) defines the result.
@Suite struct KernelConfigParsingTests {
    private func characterWise(_ text: String) -> [String: String] {
        var values: [String: String] = [:]
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            guard line.hasPrefix("CONFIG_"), let eq = line.firstIndex(of: "=") else { continue }
            var value = String(line[line.index(after: eq)...])
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                value = String(value.dropFirst().dropLast())
                    .replacingOccurrences(of: "\\\"", with: "\"")
                    .replacingOccurrences(of: "\\\\", with: "\\")
            }
            values[String(line[..<eq])] = value
        }
        return values
    }

    @Test func agreesOnInstalledConfigs() throws {
        let kernels = KernelDiscovery().installedKernels()
        try #require(!kernels.isEmpty)
        for kernel in kernels {
            let text = try String(contentsOfFile: kernel.configPath, encoding: .utf8)
            let parsed = KernelConfig(parsing: text).values
            #expect(parsed.count > 1000, "\(kernel.configPath)")
            #expect(parsed == characterWise(text), "\(kernel.configPath)")
        }
    }

    @Test func agreesOnOddText() {
        let samples = [
            "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"quoted \\\"x\\\" \\\\ end\"\n\n\nCONFIG_D=\"\nCONFIG_E\nNOT_CONFIG=1\n",
            "CONFIG_CRLF=y\r\nCONFIG_NEXT=m\r\n",
            "CONFIG_UNICODE=\"caf\u{00E9}\"\nCONFIG_LAST=1",
            "CONFIG_EMPTY=\nCONFIG_EQ=a=b\n",
        ]
        for sample in samples {
            #expect(KernelConfig(parsing: sample).values == characterWise(sample), "\(sample.debugDescription)")
        }
    }
}
