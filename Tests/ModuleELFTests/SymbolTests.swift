import Foundation
import ModuleELF
import TestSupport
import Testing

/// Exports and undefined symbols against binutils' nm/readelf; __versions CRCs against the
/// kernel's Module.symvers.
@Suite(.serialized) struct SymbolTests {
    /// nm cannot read compressed modules: decompress with the real xz into a scratch file.
    private func elfPath(_ path: String, scratch: ScratchDirectory) async throws -> String {
        guard path.hasSuffix(".xz") else { return path }
        let data = try await runTool(["xz", "-dc", path])
        return scratch.write(URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent, Array(data))
    }

    private func nmNames(_ arguments: [String]) async throws -> [(type: String, name: String)] {
        let text = String(decoding: try await runTool(["nm"] + arguments), as: UTF8.self)
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2 else { return nil }
            return (String(fields[fields.count - 2]), String(fields[fields.count - 1]))
        }
    }

    @Test(arguments: InstalledKernel.all)
    func symbolsMatchNm(kernel: InstalledKernel) async throws {
        let scratch = try ScratchDirectory()
        let sample = kernel.sample(40)
        try #require(sample.count >= 40)
        var exportsSeen = 0
        for path in sample {
            let module = try ModuleFile.read(path: path)
            let elf = try await elfPath(path, scratch: scratch)
            let undefined = try await nmNames(["-u", elf]).map(\.name).sorted()
            #expect(module.undefinedSymbols == undefined, "undefined symbols of \(path)")
            let exported = try await nmNames([elf]).map(\.name).filter { $0.hasPrefix("__ksymtab_") }
                .map { String($0.dropFirst("__ksymtab_".count)) }.sorted()
            #expect(module.exports.map(\.symbol) == exported, "exports of \(path)")
            exportsSeen += exported.count
        }
        #expect(exportsSeen > 40)
    }

    @Test(arguments: InstalledKernel.all)
    func exportsMatchModuleSymvers(kernel: InstalledKernel) throws {
        let symvers = try readSymvers(kernel.symversPath)
        var byModule: [String: [String]] = [:]
        for (symbol, entry) in symvers where entry.module != "vmlinux" { byModule[entry.module, default: []].append(symbol) }
        var checked = 0
        for path in kernel.sample(210) {
            var relative = String(path.dropFirst(kernel.moduleDirectory.count + 1))
            for suffix in [".xz", ".ko"] where relative.hasSuffix(suffix) { relative.removeLast(suffix.count) }
            let module = try ModuleFile.read(path: path, parts: .symbols)
            #expect(module.exports.map(\.symbol).sorted() == (byModule[relative] ?? []).sorted(), "exports of \(relative)")
            for export in module.exports {
                guard let entry = symvers[export.symbol] else { continue }
                #expect(export.isGPLOnly == (entry.type == "EXPORT_SYMBOL_GPL"), "\(export.symbol) GPL flag")
                #expect(export.exportType == entry.type, "\(export.symbol) export type")
                #expect(export.namespace == entry.namespace, "\(export.symbol) namespace")
                #expect(UInt64(export.crc) == entry.crc, "\(export.symbol) CRC")
                checked += 1
            }
        }
        #expect(checked > 100)
    }

    @Test(arguments: InstalledKernel.all)
    func versionCRCsMatchModuleSymvers(kernel: InstalledKernel) throws {
        let symvers = try readSymvers(kernel.symversPath)
        var vmlinuxChecked = 0
        for path in kernel.sample(210) {
            let module = try ModuleFile.read(path: path, parts: .symbols)
            for version in module.versions {
                guard let entry = symvers[version.name] else { continue }
                #expect(version.crc == entry.crc, "\(path): CRC of \(version.name)")
                if entry.module == "vmlinux" { vmlinuxChecked += 1 }
            }
        }
        #expect(vmlinuxChecked > 1000)
    }

    @Test func sectionsMatchReadelf() async throws {
        let path = try #require(InstalledKernels.module("drivers/usb/storage/usb-storage.ko", compressedAs: ""), "run scripts/setup")
        let module = try ModuleFile.read(path: path, parts: .sections)
        let text = String(decoding: try await runTool(["readelf", "-SW", path]), as: UTF8.self)
        // "  [ 1] .text  PROGBITS  addr off size es flg lk inf al"
        let rows = text.split(separator: "\n").filter { $0.hasPrefix("  [") }.dropFirst(2)
        #expect(rows.count == module.sections.count - 1)
        for (row, section) in zip(rows, module.sections.dropFirst()) {
            let fields = row.split(separator: "]", maxSplits: 1)[1].split(separator: " ")
            #expect(String(fields[0]) == section.name)
            #expect(String(fields[1]) == section.typeName)
            #expect(UInt64(fields[4], radix: 16) == section.size)
        }
    }
}
