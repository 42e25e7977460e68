import Foundation
import ModuleELF
import TestSupport
import Testing

/// `modinfo FILE` and `modinfo -F NAME FILE` reproduced byte for byte, checked against the real
/// modinfo (kmod) on a deterministic sample of each installed Debian kernel's modules.
/// scripts/check-inspect checks every module.
@Suite(.serialized) struct ModinfoParityTests {
    static let sampleSize = 210

    @Test(arguments: InstalledKernel.all)
    func fullOutputMatchesModinfo(kernel: InstalledKernel) async throws {
        let sample = kernel.sample(Self.sampleSize)
        try #require(sample.count >= 200, "modules of \(kernel) are not installed; run scripts/setup")
        let expected = try await runTool(["modinfo"] + sample)
        var actual: [UInt8] = []
        for path in sample {
            let module = try ModuleFile.read(path: path, parts: [.modinfo, .signature])
            ModinfoFormatter.render(module, filename: path, into: &actual)
        }
        if Array(expected) != actual {
            // Name the first module that differs.
            for path in sample {
                var one: [UInt8] = []
                ModinfoFormatter.render(try ModuleFile.read(path: path), filename: path, into: &one)
                let reference = Array(try await runTool(["modinfo", path]))
                #expect(one == reference, "modinfo output differs for \(path)")
                if one != reference { break }
            }
        }
        #expect(Array(expected) == actual)
    }

    @Test(arguments: InstalledKernel.all)
    func fieldsMatchModinfoF(kernel: InstalledKernel) async throws {
        let sample = kernel.sample(Self.sampleSize)
        try #require(sample.count >= 200)
        let modules = try sample.map { try ModuleFile.read(path: $0, parts: [.modinfo, .signature]) }
        for field in ["vermagic", "depends", "license", "name", "srcversion", "parm", "signer", "sig_key", "filename"] {
            let expected = try await runTool(["modinfo", "-F", field] + sample)
            var actual: [UInt8] = []
            for (path, module) in zip(sample, modules) {
                ModinfoFormatter.renderField(field, module: module, filename: path, into: &actual)
            }
            #expect(Array(expected) == actual, "modinfo -F \(field) differs on \(kernel)")
        }
    }

    @Test func knownFactsOfUsbStorage() throws {
        // Facts about Debian's 6.12 usb-storage module, which every 6.12 ABI shares.
        let release = try #require(InstalledKernels.standard.first { $0.hasPrefix("6.12.") }, "run scripts/setup")
        let path = try #require(InstalledKernels.module(release, "drivers/usb/storage/usb-storage.ko"),
                                "\(InstalledKernels.imageProblem(release) ?? "usb-storage is missing from \(release)")")
        let module = try ModuleFile.read(path: path)
        #expect(module.compression == .xz)
        #expect(module.values("name") == ["usb_storage"])
        #expect(module.values("license") == ["GPL"])
        #expect(module.values("vermagic").first?.hasPrefix("\(release) SMP") == true)
        let signature = try #require(module.signature)
        #expect(signature.idType == "PKCS#7")
        #expect(signature.hashAlgorithm == "sha256")
        #expect(signature.placement == .signedThenCompressed)
        #expect(module.exports.contains { $0.symbol == "usb_stor_CB_reset" && $0.isGPLOnly && $0.namespace == "USB_STORAGE" })
    }

    @Test func hexLinesWrapAfterTwentyBytes() throws {
        // The signature field of a real module: 20 bytes per line, two tabs before continuations.
        let path = InstalledKernel.all[0].sample(1)[0]
        let module = try ModuleFile.read(path: path)
        let signature = try #require(module.signature)
        let text = module.values("signature")[0]
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == (signature.signature.count + 19) / 20)
        #expect(lines.dropFirst().allSatisfy { $0.hasPrefix("\t\t") })
    }
}
