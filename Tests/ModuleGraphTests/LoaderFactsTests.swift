import CKmod
import Foundation
import KernelTree
import ModuleELF
import TestSupport
import Testing

@testable import ModuleGraph

/// `LoaderFacts.read` parses modules itself, following libkmod's rules; libkmod is the
/// reference it must agree with, field by field.
@Suite struct LoaderFactsTests {
    /// Every 8th module of each installed tree (about 500 for the full Debian flavours; .ko and .ko.xz).
    @Test(arguments: InstalledTrees.releases)
    func factsEqualLibkmodOnInstalledModules(release: String) throws {
        try InstalledKernels.requireImage(release)
        let directory = "/lib/modules/\(release)"
        let paths = try String(contentsOfFile: directory + "/modules.dep", encoding: .utf8)
            .split(separator: "\n").map { directory + "/" + String($0.prefix { $0 != ":" }) }.sorted()
        let sample = Swift.stride(from: 0, to: paths.count, by: 8).map { paths[$0] }
        #expect(sample.count >= 100)
        let reference = try LibkmodReference(moduleDirectory: directory)
        var compared = 0
        for path in sample {
            let ours = try LoaderFacts.read(path: path)
            let theirs = try #require(reference.facts(path))
            #expect(ours.name == theirs.name, "\(path)")
            #expect(ours.license == theirs.license, "\(path)")
            #expect(ours.vermagic == theirs.vermagic, "\(path)")
            #expect(ours.intree == theirs.intree, "\(path)")
            #expect(ours.depends == theirs.depends, "\(path)")
            #expect(ours.importedNamespaces == theirs.importedNamespaces, "\(path)")
            #expect(ours.signer == theirs.signer, "\(path)")
            #expect(ours.versions == theirs.versions, "\(path)")
            #expect(ours.undefinedSymbols.map(\.symbol) == theirs.undefined.map(\.symbol), "\(path)")
            #expect(ours.undefinedSymbols.map(\.weak) == theirs.undefined.map(\.weak), "\(path)")
            // libkmod's dependency CRC is the first __versions entry of the name, 0 when none.
            #expect(ours.undefinedSymbols.map { $0.versionCRC ?? 0 } == theirs.undefined.map(\.crc), "\(path)")
            #expect(ours.exports == theirs.exports, "\(path)")
            compared += 1
        }
        #expect(compared == sample.count)
    }

    /// The fast path must not change what a broken file does: libkmod rejects it, so must we.
    @Test func truncatedAndForeignFilesAreRejected() throws {
        let release = try InstalledTrees.first()
        let directory = "/lib/modules/\(release)"
        let first = try #require(
            try String(contentsOfFile: directory + "/modules.dep", encoding: .utf8).split(separator: "\n").first)
        let path = directory + "/" + String(first.prefix { $0 != ":" })
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("facts-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let image = try ModuleImage.withImage(path: path) { image, _ in Data(image) }
        let truncated = work.appendingPathComponent("truncated.ko").path
        try image.prefix(image.count / 2).write(to: URL(fileURLWithPath: truncated))
        let text = work.appendingPathComponent("text.ko").path
        try Data("not a module\n".utf8).write(to: URL(fileURLWithPath: text))
        for bad in [truncated, text] {
            #expect(throws: ModuleReadError.self) { try LoaderFacts.read(path: bad) }
            let reference = try LibkmodReference(moduleDirectory: directory)
            #expect(reference.facts(bad) == nil)
        }
    }
}

/// libkmod's view of a module file, read through its public API.
final class LibkmodReference {
    struct Facts {
        var name: String
        var license: String?
        var vermagic: String?
        var intree: Bool
        var depends: [String]
        var importedNamespaces: [String]
        var signer: String?
        var versions: [SymbolVersion]?
        var undefined: [(symbol: String, weak: Bool, crc: UInt64)]
        var exports: [SymbolExport]
    }

    private let context: OpaquePointer

    init(moduleDirectory: String) throws {
        context = try #require(kmod_new(moduleDirectory, nil))
        kmod_set_log_priority(context, 0)
    }

    deinit { kmod_unref(context) }

    func facts(_ path: String) -> Facts? {
        var module: OpaquePointer?
        guard kmod_module_new_from_path(context, path, &module) >= 0, let module else { return nil }
        defer { kmod_module_unref(module) }
        var info: [(String, String)] = []
        var list: OpaquePointer?
        guard kmod_module_get_info(module, &list) >= 0 else { return nil }
        walk(list) { info.append((String(cString: kmod_module_info_get_key($0)), kmod_module_info_get_value($0).map { String(cString: $0) } ?? "")) }
        kmod_module_info_free_list(list)
        func first(_ key: String) -> String? { info.first { $0.0 == key }?.1 }

        var versions: [SymbolVersion]?
        var versionList: OpaquePointer?
        if kmod_module_get_versions(module, &versionList) >= 0, versionList != nil {
            var collected: [SymbolVersion] = []
            walk(versionList) {
                collected.append(SymbolVersion(name: String(cString: kmod_module_version_get_symbol($0)),
                    crc: kmod_module_version_get_crc($0)))
            }
            kmod_module_versions_free_list(versionList)
            versions = collected
        }
        var undefined: [(symbol: String, weak: Bool, crc: UInt64)] = []
        var dependencyList: OpaquePointer?
        if kmod_module_get_dependency_symbols(module, &dependencyList) >= 0 {
            walk(dependencyList) {
                undefined.append((String(cString: kmod_module_dependency_symbol_get_symbol($0)),
                    kmod_module_dependency_symbol_get_bind($0) == Int32(KMOD_SYMBOL_WEAK.rawValue),
                    kmod_module_dependency_symbol_get_crc($0)))
            }
            kmod_module_dependency_symbols_free_list(dependencyList)
        }
        let name = first("name") ?? String(cString: kmod_module_get_name(module))
        var exports: [SymbolExport] = []
        var symbolList: OpaquePointer?
        if kmod_module_get_symbols(module, &symbolList) >= 0 {
            walk(symbolList) {
                exports.append(SymbolExport(
                    symbol: String(cString: kmod_module_symbol_get_symbol($0)), module: name,
                    crc: UInt32(truncatingIfNeeded: kmod_module_symbol_get_crc($0))))
            }
            kmod_module_symbols_free_list(symbolList)
        }
        return Facts(
            name: name,
            license: first("license"), vermagic: first("vermagic"), intree: first("intree") != nil,
            depends: first("depends").map { $0.split(separator: ",").map(String.init) } ?? [],
            importedNamespaces: info.filter { $0.0 == "import_ns" }.map(\.1),
            signer: first("signer").flatMap { $0.isEmpty ? nil : $0 },
            versions: versions, undefined: undefined, exports: exports)
    }

    private func walk(_ list: OpaquePointer?, _ body: (OpaquePointer) -> Void) {
        var entry = list
        while let current = entry {
            body(current)
            entry = kmod_list_next(list, current)
        }
    }
}
