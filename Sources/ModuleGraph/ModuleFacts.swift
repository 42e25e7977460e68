import CKmod
import CLzma
import Foundation
import NVBuildSupport

/// What the kernel's loader looks at in one module file, read through libkmod
/// (modinfo, `__versions`, undefined and exported symbols) plus the size of
/// `.gnu.linkonce.this_module` (the kernel's `struct module` size check).
public struct ModuleFacts: Sendable, Equatable, Codable {
    public var path: String
    /// The name the kernel uses in its messages (modinfo `name`, else the file name).
    public var name: String
    public var license: String?
    public var vermagic: String?
    public var intree: Bool
    public var depends: [String]
    public var importedNamespaces: [String]
    /// The signer from the appended signature, nil when unsigned.
    public var signer: String?
    /// `__versions`: symbol -> CRC, in section order; nil when the section is absent.
    public var versions: [SymbolVersion]?
    /// Undefined symbols in symbol-table order (the order the loader resolves them).
    public var undefinedSymbols: [UndefinedSymbol]
    /// Symbols the module exports, with the CRC libkmod reads (0 when it has none).
    public var exports: [ExportedSymbol]
    public var thisModuleSize: Int?

    public struct SymbolVersion: Sendable, Equatable, Codable {
        public var symbol: String
        public var crc: UInt32
    }

    public struct ExportedSymbol: Sendable, Equatable, Codable {
        public var symbol: String
        public var crc: UInt32
    }

    public struct UndefinedSymbol: Sendable, Equatable, Codable {
        public var symbol: String
        public var weak: Bool
    }

    /// `__versions` by symbol (the first entry wins, as in the kernel's linear search).
    public var versionIndex: [String: UInt32] {
        var index: [String: UInt32] = [:]
        for entry in versions ?? [] where index[entry.symbol] == nil { index[entry.symbol] = entry.crc }
        return index
    }
}

extension ModuleTree {
    /// Reads the loader-relevant facts of a module file.
    /// When `kernelLayoutCRC` is given and the module's `module_layout` CRC equals
    /// it, the struct module size is not read: that CRC hashes the full definition
    /// of struct module, so equal CRCs mean equal sizes (and a .ko.xz need not be
    /// decompressed a second time).
    public func facts(ofFile path: String, kernelLayoutCRC: UInt32? = nil) throws -> ModuleFacts {
        var module: OpaquePointer?
        guard FileManager.default.isReadableFile(atPath: path), kmod_module_new_from_path(context, path, &module) >= 0,
            let module
        else {
            throw UserError(.environment, "\(path): cannot read this module file; check the path and its permissions")
        }
        defer { kmod_module_unref(module) }
        var info: [(String, String)] = []
        var list: OpaquePointer?
        let infoStatus = kmod_module_get_info(module, &list)
        guard infoStatus >= 0 else {
            throw UserError(.environment, "\(path): not a kernel module (libkmod could not read its .modinfo: \(String(cString: strerror(-infoStatus))))")
        }
        if let list {
            var entry: OpaquePointer? = list
            while let current = entry {
                let key = String(cString: kmod_module_info_get_key(current))
                let value = kmod_module_info_get_value(current).map { String(cString: $0) } ?? ""
                info.append((key, value))
                entry = kmod_list_next(list, current)
            }
            kmod_module_info_free_list(list)
        }
        func values(_ key: String) -> [String] { info.filter { $0.0 == key }.map(\.1) }
        let fileName = String(cString: kmod_module_get_name(module))

        var versions: [ModuleFacts.SymbolVersion]?
        var versionList: OpaquePointer?
        if kmod_module_get_versions(module, &versionList) >= 0, let versionList {
            var collected: [ModuleFacts.SymbolVersion] = []
            var entry: OpaquePointer? = versionList
            while let current = entry {
                collected.append(.init(
                    symbol: String(cString: kmod_module_version_get_symbol(current)),
                    crc: UInt32(truncatingIfNeeded: kmod_module_version_get_crc(current))))
                entry = kmod_list_next(versionList, current)
            }
            kmod_module_versions_free_list(versionList)
            versions = collected
        }

        var undefined: [ModuleFacts.UndefinedSymbol] = []
        var dependencyList: OpaquePointer?
        if kmod_module_get_dependency_symbols(module, &dependencyList) >= 0, let dependencyList {
            var entry: OpaquePointer? = dependencyList
            while let current = entry {
                undefined.append(.init(
                    symbol: String(cString: kmod_module_dependency_symbol_get_symbol(current)),
                    weak: kmod_module_dependency_symbol_get_bind(current) == Int32(KMOD_SYMBOL_WEAK.rawValue)))
                entry = kmod_list_next(dependencyList, current)
            }
            kmod_module_dependency_symbols_free_list(dependencyList)
        }

        var exports: [ModuleFacts.ExportedSymbol] = []
        var symbolList: OpaquePointer?
        if kmod_module_get_symbols(module, &symbolList) >= 0, let symbolList {
            var entry: OpaquePointer? = symbolList
            while let current = entry {
                exports.append(.init(
                    symbol: String(cString: kmod_module_symbol_get_symbol(current)),
                    crc: UInt32(truncatingIfNeeded: kmod_module_symbol_get_crc(current))))
                entry = kmod_list_next(symbolList, current)
            }
            kmod_module_symbols_free_list(symbolList)
        }

        return ModuleFacts(
            path: path,
            name: values("name").first ?? fileName,
            license: values("license").first,
            vermagic: values("vermagic").first,
            intree: !values("intree").isEmpty,
            depends: values("depends").first.map { $0.split(separator: ",").map(String.init) } ?? [],
            importedNamespaces: values("import_ns"),
            signer: values("signer").first.flatMap { $0.isEmpty ? nil : $0 },
            versions: versions,
            undefinedSymbols: undefined,
            exports: exports,
            thisModuleSize: kernelLayoutCRC != nil && versions?.first(where: { $0.symbol == "module_layout" })?.crc == kernelLayoutCRC
                ? nil : try? ModuleSections.size(of: ".gnu.linkonce.this_module", inFile: path)
        )
    }
}

/// Just enough ELF64 to find one section's size; every read is bounds-checked.
enum ModuleSections {
    static func size(of sectionName: String, inFile path: String) throws -> Int? {
        var data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        if path.hasSuffix(".xz") { data = try decompressXZ(data, path: path) }
        return data.withUnsafeBytes { bytes -> Int? in
            func read<T: FixedWidthInteger>(_ offset: Int, as: T.Type) -> T? {
                guard offset >= 0, offset + MemoryLayout<T>.size <= bytes.count else { return nil }
                return T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
            }
            guard bytes.count > 64, bytes[0] == 0x7F, bytes[1] == 0x45, bytes[2] == 0x4C, bytes[3] == 0x46,
                bytes[4] == 2, bytes[5] == 1,
                let sectionOffset = read(0x28, as: UInt64.self), let entrySize = read(0x3A, as: UInt16.self),
                let count = read(0x3C, as: UInt16.self), let namesIndex = read(0x3E, as: UInt16.self),
                entrySize >= 64, namesIndex < count
            else { return nil }
            func header(_ index: Int) -> Int { Int(sectionOffset) + index * Int(entrySize) }
            guard let namesOffset = read(header(Int(namesIndex)) + 0x18, as: UInt64.self),
                let namesSize = read(header(Int(namesIndex)) + 0x20, as: UInt64.self),
                Int(namesOffset) + Int(namesSize) <= bytes.count
            else { return nil }
            let wanted = Array(sectionName.utf8)
            for index in 0..<Int(count) {
                guard let nameOffset = read(header(index), as: UInt32.self), UInt64(nameOffset) < namesSize,
                    let size = read(header(index) + 0x20, as: UInt64.self)
                else { return nil }
                let start = Int(namesOffset) + Int(nameOffset)
                let end = start + wanted.count
                guard end < Int(namesOffset) + Int(namesSize) else { continue }
                if bytes[end] == 0, Array(bytes[start..<end]) == wanted { return Int(size) }
            }
            return nil
        }
    }

    static func decompressXZ(_ input: Data, path: String) throws -> Data {
        var stream = lzma_stream()
        guard lzma_stream_decoder(&stream, UInt64.max, 0) == LZMA_OK else {
            throw UserError(.environment, "\(path): cannot start an xz decoder")
        }
        defer { lzma_end(&stream) }
        var output = Data()
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        let result: lzma_ret = input.withUnsafeBytes { inBytes in
            stream.next_in = inBytes.bindMemory(to: UInt8.self).baseAddress
            stream.avail_in = inBytes.count
            while true {
                let status = buffer.withUnsafeMutableBufferPointer { out -> lzma_ret in
                    stream.next_out = out.baseAddress
                    stream.avail_out = chunk
                    return lzma_code(&stream, LZMA_FINISH)
                }
                output.append(contentsOf: buffer[0..<(chunk - stream.avail_out)])
                if status != LZMA_OK { return status }
            }
        }
        guard result == LZMA_STREAM_END else {
            throw UserError(.environment, "\(path): xz data is damaged (liblzma status \(result.rawValue)); reinstall the module")
        }
        return output
    }
}
