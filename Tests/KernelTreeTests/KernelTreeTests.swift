import Foundation
import Testing

@testable import KernelTree

@Suite struct KernelConfigTests {
    @Test func parsesAssignmentsAndQuotedStrings() {
        let config = KernelConfig(parsing: """
            # comment
            CONFIG_MODVERSIONS=y
            CONFIG_DRM=m
            # CONFIG_PREEMPT_RT is not set
            CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"
            """)
        #expect(config.isEnabled("MODVERSIONS"))
        #expect(!config.isEnabled("DRM"))
        #expect(config.isEnabled("DRM", includingModule: true))
        #expect(!config.isEnabled("PREEMPT_RT"))
        #expect(config["CC_VERSION_TEXT"] == "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0")
    }
}

@Suite struct InstalledKernelTests {
    /// Facts about the Debian kernels the set-up script installs.
    @Test func discoversDebianSplitTrees() throws {
        let kernels = KernelDiscovery().installedKernels().filter { !$0.release.contains("-rt-") }
        try #require(kernels.count >= 2, "run scripts/setup to install the 6.1 and 6.12 headers")
        for kernel in kernels {
            #expect(kernel.sourceDirectory.hasSuffix("/source"))
            #expect(kernel.outputDirectory.hasSuffix("/build"))
            #expect(kernel.arch == "x86_64")
            #expect(kernel.facts.modversions)
            #expect(!kernel.facts.preemptRT)
            if kernel.release.hasPrefix("6.1.") { #expect(kernel.compiler == "gcc-12") }
            if kernel.release.hasPrefix("6.12.") { #expect(kernel.compiler == "x86_64-linux-gnu-gcc-12") }
            #expect(kernel.compilerInstalled)
            let symvers = try ModuleSymvers(contentsOf: kernel.moduleSymversPath)
            #expect(ModuleSymvers.hasVmlinuxExports(at: kernel.moduleSymversPath) == true)
            #expect(symvers["printk"] != nil || symvers["_printk"] != nil)
        }
    }

    @Test func rtFlavourIsPreemptRT() throws {
        let rt = KernelDiscovery().installedKernels().filter { $0.release.contains("-rt-") }
        try #require(!rt.isEmpty)
        #expect(rt.allSatisfy { $0.facts.preemptRT })
    }

    @Test func missingReleaseNamesThePackage() {
        #expect(throws: (any Error).self) { try KernelDiscovery().kernel(release: "0.0.0-nonexistent") }
        do {
            _ = try KernelDiscovery().kernel(release: "0.0.0-nonexistent")
        } catch {
            #expect("\(error)".contains("linux-headers-0.0.0-nonexistent"))
        }
    }
}

@Suite struct KernelTargetConfigTests {
    /// Discovery reads `.config` once and the target carries it: nothing else parses it.
    @Test func targetCarriesTheParsedConfig() throws {
        let kernel = try #require(KernelDiscovery().installedKernels().first, "run scripts/setup to install kernel headers")
        let parsed = KernelConfig(parsing: try String(contentsOfFile: kernel.configPath, encoding: .utf8))
        #expect(kernel.config == parsed)
        #expect(!kernel.config.values.isEmpty)
        #expect(kernel.facts == KernelTarget.ConfigFacts(config: kernel.config))
        #expect(kernel.compilerVersionText == kernel.config["CC_VERSION_TEXT"])
    }

    /// Reports encode the facts, not the thousands of options.
    @Test func configIsNotEncoded() throws {
        let kernel = try #require(KernelDiscovery().installedKernels().first, "run scripts/setup to install kernel headers")
        let data = try JSONEncoder().encode(kernel)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object["config"] == nil)
        #expect(object["facts"] != nil)
        let decoded = try JSONDecoder().decode(KernelTarget.self, from: data)
        #expect(decoded.release == kernel.release)
        #expect(decoded.config.values.isEmpty)
    }
}
