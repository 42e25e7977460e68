import CElf
import Glibc
import KernelTree

/// One `key=value` string of `.modinfo`, kept as bytes so output matches modinfo byte for byte
/// even when a value is not UTF-8.
public struct ModinfoEntry: Sendable, Equatable {
    public var keyBytes: [UInt8]
    public var valueBytes: [UInt8]
    public var key: String { String(decoding: keyBytes, as: UTF8.self) }
    public var value: String { String(decoding: valueBytes, as: UTF8.self) }

    public init(keyBytes: [UInt8], valueBytes: [UInt8]) {
        self.keyBytes = keyBytes
        self.valueBytes = valueBytes
    }

    public init(key: String, value: String) {
        self.init(keyBytes: Array(key.utf8), valueBytes: Array(value.utf8))
    }
}

/// One `__versions` entry: the CRC the module was built against for an imported symbol.
/// The one symbol-version type: inspect, the loader facts and the load simulation use it.
public struct SymbolVersion: Sendable, Equatable, Codable {
    public var name: String
    /// 64-bit modules store the CRC in 8 bytes, 32-bit modules in 4.
    public var crc: UInt64

    public init(name: String, crc: UInt64) {
        self.name = name
        self.crc = crc
    }
}

/// One section header.
public struct SectionInfo: Sendable, Equatable, Codable {
    public var index: Int
    public var name: String
    public var type: UInt32
    public var flags: UInt64
    public var offset: UInt64
    public var size: UInt64
    public var alignment: UInt64

    /// readelf's spelling of the type (`PROGBITS`, `RELA`, ...).
    public var typeName: String { sectionTypeName(type) }
    /// readelf's flag letters (`WAX`, `AMS`, ...).
    public var flagLetters: String { sectionFlagLetters(flags) }
}

/// Which parts of a module `ModuleFile.read` should decode; modinfo output needs only two.
public struct ModuleParts: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    public static let modinfo = ModuleParts(rawValue: 1)
    public static let signature = ModuleParts(rawValue: 2)
    public static let symbols = ModuleParts(rawValue: 4)
    public static let sections = ModuleParts(rawValue: 8)
    public static let all: ModuleParts = [.modinfo, .signature, .symbols, .sections]
}

/// One parsed kernel module (`.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`).
public struct ModuleFile: Sendable {
    public var path: String
    public var compression: ModuleCompression
    /// Size of the file on disk and of the ELF image after decompression.
    public var fileSize: Int
    public var imageSize: Int
    public var elfClass: Int
    public var machine: UInt16
    public var modinfo: [ModinfoEntry] = []
    /// What modpost would write to Module.symvers for this module: `__ksymtab*` exports
    /// sorted by name, with the `__crc_` CRC (0 without modversions) and this module's name.
    public var exports: [SymbolExport] = []
    public var undefinedSymbols: [String] = []
    public var versions: [SymbolVersion] = []
    public var sections: [SectionInfo] = []
    public var signature: ModuleSignature?

    /// The machine modules are expected to be built for: this host's.
    public static let hostMachine: UInt16 = {
        #if arch(x86_64)
        return 62
        #elseif arch(arm64)
        return 183
        #elseif arch(i386)
        return 3
        #else
        return 0
        #endif
    }()

    public static func read(path: String) throws(ModuleReadError) -> ModuleFile {
        try read(path: path, parts: .all)
    }

    /// Reads `path`. `expectedMachine` nil accepts any machine.
    public static func read(
        path: String, parts: ModuleParts, expectedMachine: UInt16? = hostMachine
    ) throws(ModuleReadError) -> ModuleFile {
        let raw = try ModuleBytes.map(path: path)
        let compression = ModuleCompression.detect(raw.buffer)
        var image = raw
        var outerSignature: (ModuleSignature, Int)? = nil
        if compression != .none {
            // A signature appended to the compressed file sits outside the stream.
            var payload = raw.buffer
            if SignatureReader.hasMagic(raw.buffer),
                let found = SignatureReader.read(raw.buffer, placement: .compressedThenSigned)
            {
                outerSignature = found
                payload = UnsafeRawBufferPointer(rebasing: raw.buffer[..<found.1])
            }
            image = try Decompressor.decompress(payload, format: compression, path: path)
        }
        var module = try ELFImage.parse(
            image, path: path, parts: parts, expectedMachine: expectedMachine)
        module.compression = compression
        module.fileSize = raw.count
        if !module.exports.isEmpty {
            let name = module.modinfo.first { $0.keyBytes == Array("name".utf8) }?.value ?? LoaderFacts.fileModuleName(path)
            for index in module.exports.indices { module.exports[index].module = name }
        }
        if parts.contains(.signature) {
            let placement: ModuleSignature.Placement = compression == .none ? .uncompressed : .signedThenCompressed
            module.signature = SignatureReader.read(image.buffer, placement: placement)?.0 ?? outerSignature?.0
        }
        return module
    }

    /// Values of `key` in the order modinfo lists them, including the signature fields.
    public func values(_ key: String) -> [String] {
        let wanted = Array(key.utf8)
        return ModinfoFormatter.infoList(self).filter { $0.keyBytes == wanted }.map(\.value)
    }
}

/// libelf is initialised once per process.
private let libelfReady: Bool = elf_version(UInt32(EV_CURRENT)) != UInt32(EV_NONE)

enum ELFImage {
    static func parse(
        _ image: ModuleBytes, path: String, parts: ModuleParts, expectedMachine: UInt16?
    ) throws(ModuleReadError) -> ModuleFile {
        let bytes = image.buffer
        if bytes.count == 0 { throw ModuleReadError(path: path, .empty) }
        guard bytes.count >= 4, bytes[0] == 0x7F, bytes[1] == 0x45, bytes[2] == 0x4C, bytes[3] == 0x46 else {
            throw ModuleReadError(path: path, .notELF)
        }
        guard bytes.count >= 16 else { throw ModuleReadError(path: path, .truncated("the ELF identification is incomplete")) }
        let elfClass: Int
        switch bytes[4] {
        case 1: elfClass = 32
        case 2: elfClass = 64
        default: throw ModuleReadError(path: path, .unsupportedClass("EI_CLASS \(bytes[4])"))
        }
        guard bytes[5] == 1 || bytes[5] == 2 else { throw ModuleReadError(path: path, .unsupportedClass("EI_DATA \(bytes[5])")) }
        let headerSize = elfClass == 64 ? 64 : 52
        guard bytes.count >= headerSize else {
            throw ModuleReadError(path: path, .truncated("\(bytes.count) bytes, shorter than the \(headerSize)-byte ELF header"))
        }
        precondition(libelfReady, "libelf version mismatch")
        guard let elf = elf_memory(image.base!.assumingMemoryBound(to: CChar.self), bytes.count) else {
            throw ModuleReadError(path: path, .libelf(String(cString: elf_errmsg(-1))))
        }
        defer { elf_end(elf) }
        guard elf_kind(elf) == ELF_K_ELF else { throw ModuleReadError(path: path, .notELF) }
        var header = GElf_Ehdr()
        guard gelf_getehdr(elf, &header) != nil else {
            throw ModuleReadError(path: path, .libelf(String(cString: elf_errmsg(-1))))
        }
        if let expectedMachine, header.e_machine != expectedMachine {
            throw ModuleReadError(path: path, .wrongMachine(found: header.e_machine, expected: expectedMachine))
        }
        guard header.e_type == UInt16(ET_REL) else { throw ModuleReadError(path: path, .notRelocatable(header.e_type)) }
        let entrySize = elfClass == 64 ? 64 : 40
        guard header.e_shoff != 0, Int(header.e_shentsize) == entrySize else {
            throw ModuleReadError(path: path, .badSectionTable("no section header table or e_shentsize \(header.e_shentsize)"))
        }
        // Check the table against the file before libelf reads it; e_shnum 0 means the
        // count is in section 0, which must itself be inside the file.
        func checkTable(entries: UInt64) throws(ModuleReadError) {
            let (tableEnd, overflow) = header.e_shoff.addingReportingOverflow(max(entries, 1) * UInt64(entrySize))
            guard !overflow, tableEnd <= UInt64(bytes.count) else {
                throw ModuleReadError(path: path, .truncated(
                    "the section header table (offset \(header.e_shoff), \(entries) entries) ends past the end of the file (\(bytes.count) bytes)"))
            }
        }
        try checkTable(entries: UInt64(header.e_shnum))
        var sectionCount = 0
        var namesIndex = 0
        guard elf_getshdrnum(elf, &sectionCount) == 0, elf_getshdrstrndx(elf, &namesIndex) == 0 else {
            throw ModuleReadError(path: path, .badSectionTable(String(cString: elf_errmsg(-1))))
        }
        try checkTable(entries: UInt64(sectionCount))
        guard namesIndex < sectionCount else {
            throw ModuleReadError(path: path, .badSectionTable("section name table index \(namesIndex) of \(sectionCount)"))
        }

        var module = ModuleFile(
            path: path, compression: .none, fileSize: bytes.count, imageSize: bytes.count,
            elfClass: elfClass, machine: header.e_machine)
        var headers: [(GElf_Shdr, String)] = []
        headers.reserveCapacity(sectionCount)
        for index in 0..<sectionCount {
            var sectionHeader = GElf_Shdr()
            guard let section = elf_getscn(elf, index), gelf_getshdr(section, &sectionHeader) != nil else {
                throw ModuleReadError(path: path, .badSectionTable("section \(index): \(String(cString: elf_errmsg(-1)))"))
            }
            var name = ""
            if index != 0 {
                guard let cName = elf_strptr(elf, namesIndex, Int(sectionHeader.sh_name)) else {
                    throw ModuleReadError(path: path, .badSectionTable("section \(index) name offset \(sectionHeader.sh_name) is outside the name table"))
                }
                name = String(cString: cName)
            }
            if sectionHeader.sh_type != UInt32(SHT_NOBITS), sectionHeader.sh_type != UInt32(SHT_NULL) {
                let (end, wrapped) = sectionHeader.sh_offset.addingReportingOverflow(sectionHeader.sh_size)
                if wrapped || end > UInt64(bytes.count) {
                    throw ModuleReadError(path: path, .sectionOutOfBounds(
                        name: name.isEmpty ? "#\(index)" : name, offset: sectionHeader.sh_offset,
                        size: sectionHeader.sh_size, fileSize: bytes.count))
                }
            }
            headers.append((sectionHeader, name))
        }

        func contents(_ index: Int) -> UnsafeRawBufferPointer {
            let header = headers[index].0
            if header.sh_type == UInt32(SHT_NOBITS) { return UnsafeRawBufferPointer(start: nil, count: 0) }
            return UnsafeRawBufferPointer(rebasing: bytes[Int(header.sh_offset)..<Int(header.sh_offset + header.sh_size)])
        }
        func firstSection(named wanted: String) -> Int? {
            headers.indices.dropFirst().first { headers[$0].1 == wanted }
        }

        if parts.contains(.modinfo), let index = firstSection(named: ".modinfo") {
            module.modinfo = try modinfoEntries(contents(index), path: path)
        }
        if parts.contains(.sections) {
            module.sections = headers.enumerated().map { index, entry in
                SectionInfo(
                    index: index, name: entry.1, type: entry.0.sh_type, flags: entry.0.sh_flags,
                    offset: entry.0.sh_offset, size: entry.0.sh_size, alignment: entry.0.sh_addralign)
            }
        }
        if parts.contains(.symbols) {
            if let index = firstSection(named: "__versions") {
                module.versions = try versionEntries(contents(index), elfClass: elfClass, bigEndian: bytes[5] == 2, path: path)
            }
            try readSymbols(elf: elf, headers: headers, contents: contents, bigEndian: bytes[5] == 2, into: &module, path: path)
        }
        module.imageSize = bytes.count
        return module
    }

    /// Splits `.modinfo` into entries the way libkmod does: NUL runs separate strings,
    /// empty strings are skipped, a string without `=` is a key with an empty value.
    static func modinfoEntries(_ data: UnsafeRawBufferPointer, path: String) throws(ModuleReadError) -> [ModinfoEntry] {
        var entries: [ModinfoEntry] = []
        guard data.count > 0 else { return entries }
        if data[data.count - 1] != 0 {
            throw ModuleReadError(path: path, .malformed(".modinfo does not end with a NUL terminator (last entry is cut off)"))
        }
        var start = 0
        var index = 0
        while index < data.count {
            if data[index] == 0 {
                if index > start {
                    let entry = UnsafeRawBufferPointer(rebasing: data[start..<index])
                    if let equals = entry.firstIndex(of: UInt8(ascii: "=")) {
                        entries.append(ModinfoEntry(
                            keyBytes: Array(entry[..<equals]), valueBytes: Array(entry[(equals + 1)...])))
                    } else {
                        entries.append(ModinfoEntry(keyBytes: Array(entry), valueBytes: []))
                    }
                }
                start = index + 1
            }
            index += 1
        }
        return entries
    }

    /// `__versions`: fixed 64-byte records, a CRC then a NUL-padded name.
    static func versionEntries(
        _ data: UnsafeRawBufferPointer, elfClass: Int, bigEndian: Bool, path: String
    ) throws(ModuleReadError) -> [SymbolVersion] {
        let recordSize = 64
        let crcSize = elfClass == 64 ? 8 : 4
        guard data.count % recordSize == 0 else {
            throw ModuleReadError(path: path, .malformed("__versions is \(data.count) bytes, not a multiple of \(recordSize)"))
        }
        var versions: [SymbolVersion] = []
        versions.reserveCapacity(data.count / recordSize)
        var offset = 0
        while offset < data.count {
            var crc: UInt64
            if crcSize == 8 {
                let value = data.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
                crc = bigEndian ? UInt64(bigEndian: value) : UInt64(littleEndian: value)
            } else {
                let value = data.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
                crc = UInt64(bigEndian ? UInt32(bigEndian: value) : UInt32(littleEndian: value))
            }
            let nameBytes = data[(offset + crcSize)..<(offset + recordSize)]
            guard let nul = nameBytes.firstIndex(of: 0) else {
                throw ModuleReadError(path: path, .malformed("__versions entry \(offset / recordSize) has no NUL-terminated name"))
            }
            versions.append(SymbolVersion(name: String(decoding: nameBytes[..<nul], as: UTF8.self), crc: crc))
            offset += recordSize
        }
        return versions
    }

    private static func readSymbols(
        elf: OpaquePointer, headers: [(GElf_Shdr, String)], contents: (Int) -> UnsafeRawBufferPointer, bigEndian: Bool,
        into module: inout ModuleFile, path: String
    ) throws(ModuleReadError) {
        guard let symtabIndex = headers.indices.first(where: { headers[$0].0.sh_type == UInt32(SHT_SYMTAB) }) else { return }
        let symtab = headers[symtabIndex].0
        guard symtab.sh_entsize != 0, Int(symtab.sh_link) < headers.count else {
            throw ModuleReadError(path: path, .malformed(".symtab has entry size 0 or a bad string table link"))
        }
        guard let section = elf_getscn(elf, symtabIndex), let data = elf_getdata(section, nil) else {
            throw ModuleReadError(path: path, .libelf(".symtab: \(String(cString: elf_errmsg(-1)))"))
        }
        let count = Int(min(symtab.sh_size / symtab.sh_entsize, UInt64(Int32.max)))
        var exported: [(name: String, section: Int)] = []
        var namespaceSymbols: [String: (section: Int, value: UInt64)] = [:]
        var crcSymbols: [String: (section: Int, value: UInt64)] = [:]
        var undefined: [String] = []
        for index in 1..<max(count, 1) {
            var symbol = GElf_Sym()
            guard gelf_getsym(data, Int32(index), &symbol) != nil else {
                throw ModuleReadError(path: path, .libelf("symbol \(index): \(String(cString: elf_errmsg(-1)))"))
            }
            guard symbol.st_name != 0 else { continue }
            guard let cName = elf_strptr(elf, Int(symtab.sh_link), Int(symbol.st_name)) else {
                throw ModuleReadError(path: path, .malformed("symbol \(index) name offset \(symbol.st_name) is outside the string table"))
            }
            let name = String(cString: cName)
            let sectionIndex = Int(symbol.st_shndx)
            if sectionIndex == Int(SHN_UNDEF) {
                undefined.append(name)
            } else if name.hasPrefix("__ksymtab_"), sectionIndex < headers.count,
                headers[sectionIndex].1.hasPrefix("__ksymtab")
            {
                exported.append((String(name.dropFirst("__ksymtab_".count)), sectionIndex))
            } else if name.hasPrefix("__crc_") {
                crcSymbols[String(name.dropFirst("__crc_".count))] = (sectionIndex, symbol.st_value)
            } else if name.hasPrefix("__kstrtabns_"), sectionIndex < headers.count {
                namespaceSymbols[String(name.dropFirst("__kstrtabns_".count))] = (sectionIndex, symbol.st_value)
            }
        }
        // A `__crc_` symbol's value: absolute, or the offset of the CRC in its section.
        func crcValue(_ value: UInt64, section index: Int) -> UInt32 {
            if index == Int(SHN_ABS) || index == Int(SHN_UNDEF) { return UInt32(truncatingIfNeeded: value) }
            guard index < headers.count else { return 0 }
            let bytes = contents(index)
            guard bytes.count >= 4, value <= UInt64(bytes.count - 4) else { return 0 }
            let raw = bytes.loadUnaligned(fromByteOffset: Int(value), as: UInt32.self)
            return bigEndian ? UInt32(bigEndian: raw) : UInt32(littleEndian: raw)
        }
        module.exports = exported.map { entry in
            var namespace: String? = nil
            if let location = namespaceSymbols[entry.name] {
                let strings = contents(location.section)
                if location.value < UInt64(strings.count) {
                    let tail = strings[Int(location.value)...]
                    let end = tail.firstIndex(of: 0) ?? strings.count
                    let text = String(decoding: strings[Int(location.value)..<end], as: UTF8.self)
                    namespace = text.isEmpty ? nil : text
                }
            }
            let gplOnly = headers[entry.section].1.hasSuffix("_gpl")
            return SymbolExport(
                symbol: entry.name, module: "", crc: crcSymbols[entry.name].map { crcValue($0.value, section: $0.section) } ?? 0,
                exportType: gplOnly ? "EXPORT_SYMBOL_GPL" : "EXPORT_SYMBOL",
                namespace: namespace)
        }.sorted { $0.symbol < $1.symbol }
        module.undefinedSymbols = undefined.sorted()
    }
}

func sectionTypeName(_ type: UInt32) -> String {
    switch type {
    case 0: return "NULL"
    case 1: return "PROGBITS"
    case 2: return "SYMTAB"
    case 3: return "STRTAB"
    case 4: return "RELA"
    case 5: return "HASH"
    case 6: return "DYNAMIC"
    case 7: return "NOTE"
    case 8: return "NOBITS"
    case 9: return "REL"
    case 11: return "DYNSYM"
    case 14: return "INIT_ARRAY"
    case 15: return "FINI_ARRAY"
    case 16: return "PREINIT_ARRAY"
    case 17: return "GROUP"
    case 18: return "SYMTAB SECTION INDICES"
    case 0x6fff_fff5: return "GNU_ATTRIBUTES"
    case 0x6fff_fff6: return "GNU_HASH"
    case 0x7000_0001: return "X86_64_UNWIND"
    default: return hexType(type)
    }
}

func sectionFlagLetters(_ flags: UInt64) -> String {
    let letters: [(UInt64, Character)] = [
        (0x1, "W"), (0x2, "A"), (0x4, "X"), (0x10, "M"), (0x20, "S"), (0x40, "I"),
        (0x80, "L"), (0x100, "O"), (0x200, "G"), (0x400, "T"), (0x800, "C"), (0x8000_0000, "E"),
    ]
    return String(letters.compactMap { flags & $0.0 != 0 ? $0.1 : nil })
}

private func hexType(_ value: UInt32) -> String {
    let hex = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - hex.count)) + hex
}
