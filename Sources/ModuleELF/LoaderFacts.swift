import KernelTree

/// What the kernel's loader looks at in one module file, as libkmod reports it
/// (modinfo, `__versions`, undefined and exported symbols) plus the size of
/// `.gnu.linkonce.this_module` (the kernel's `struct module` size check).
public struct LoaderFacts: Sendable, Equatable, Codable {
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
    /// libkmod reads names and CRCs only, so `exportType` is empty and `namespace` nil;
    /// `module` is this module's name.
    public var exports: [SymbolExport]
    public var thisModuleSize: Int?
    /// The format the file is stored in.
    public var compression: ModuleCompression = .none
    /// Why the kernel's own decompressor would refuse the file if it were handed over compressed.
    public var kernelDecompressionRefusal: KernelDecompressionRefusal?

    public struct UndefinedSymbol: Sendable, Equatable, Codable {
        public var symbol: String
        public var weak: Bool
        /// The CRC of the first `__versions` entry of this name; nil when there is none.
        public var versionCRC: UInt64?

        public init(symbol: String, weak: Bool, versionCRC: UInt64?) {
            self.symbol = symbol
            self.weak = weak
            self.versionCRC = versionCRC
        }
    }

    /// `__versions` by symbol (the first entry wins, as in the kernel's linear search).
    public var versionIndex: [String: UInt64] {
        var index: [String: UInt64] = [:]
        index.reserveCapacity(versions?.count ?? 0)
        for entry in versions ?? [] where index[entry.name] == nil { index[entry.name] = entry.crc }
        return index
    }
}

extension LoaderFacts {
    /// Reads the loader-relevant facts of a module file, exactly as libkmod reports
    /// them (modinfo, `__versions`, dependency symbols, exported symbols, signer),
    /// from one mapping or decompression of the file and without a libkmod context:
    /// libkmod's `get_info` also renders every signature as hex, which dominated
    /// verify's time.
    /// When `kernelLayoutCRC` is given and the module's `module_layout` CRC equals
    /// it, the struct module size is not read: that CRC hashes the full definition
    /// of struct module, so equal CRCs mean equal sizes.
    public static func read(path: String, kernelLayoutCRC: UInt32? = nil) throws(ModuleReadError) -> LoaderFacts {
        do {
            return try ModuleImage.withImage(path: path) { image, stored in
                var facts = try read(image: image, path: path, kernelLayoutCRC: kernelLayoutCRC)
                facts.compression = stored.compression
                facts.kernelDecompressionRefusal = stored.kernelRefusal
                return facts
            }
        } catch let error as ModuleReadError {
            throw error
        } catch {
            // withImage and read throw nothing else.
            throw ModuleReadError(path: path, .malformed("\(error)"))
        }
    }

    static func read(image: UnsafeRawBufferPointer, path: String, kernelLayoutCRC: UInt32?) throws(ModuleReadError) -> LoaderFacts {
        guard let elf = LoaderImage(image) else {
            throw ModuleReadError(path: path, .notLoadable("no valid ELF header and section table"))
        }
        guard let modinfo = elf.known.modinfo else {
            throw ModuleReadError(path: path, .notLoadable("it has no .modinfo section"))
        }
        var info: [(key: ArraySlice<UInt8>, value: String)] = []
        for string in LoaderImage.strings(modinfo) {
            if let equals = string.firstIndex(of: UInt8(ascii: "=")) {
                info.append((ArraySlice(string[..<equals]), String(decoding: string[(equals + 1)...], as: UTF8.self)))
            } else {
                info.append((ArraySlice(string), ""))
            }
        }
        if let signature = ModuleImage.signature(in: image) {
            info.append((ArraySlice("signer".utf8), signature.signer))
        }
        func values(_ key: StaticString) -> [String] {
            let wanted = UnsafeRawBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
            return info.filter { $0.key.elementsEqual(wanted) }.map(\.value)
        }
        func first(_ key: StaticString) -> String? {
            let wanted = UnsafeRawBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
            return info.first { $0.key.elementsEqual(wanted) }?.value
        }

        let (versions, dependencies) = elf.versionsAndDependencies()
        let thisModuleSize: Int?
        if let kernelLayoutCRC, versions?.first(where: { $0.name == "module_layout" })?.crc == UInt64(kernelLayoutCRC) {
            thisModuleSize = nil
        } else {
            thisModuleSize = elf.sectionSize(named: ".gnu.linkonce.this_module")
        }
        let name = first("name") ?? fileModuleName(path)
        return LoaderFacts(
            path: path,
            name: name,
            license: first("license"),
            vermagic: first("vermagic"),
            intree: first("intree") != nil,
            depends: first("depends").map { $0.split(separator: ",").map(String.init) } ?? [],
            importedNamespaces: values("import_ns"),
            signer: first("signer").flatMap { $0.isEmpty ? nil : $0 },
            versions: versions,
            undefinedSymbols: dependencies,
            exports: elf.exportedSymbols(module: name),
            thisModuleSize: thisModuleSize
        )
    }

    /// The name libkmod gives a module file: the base name up to its first dot, `-` as `_`.
    static func fileModuleName(_ path: String) -> String {
        let base = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).last ?? Substring(path).utf8[...]
        let stem = base.prefix { $0 != UInt8(ascii: ".") }
        return String(decoding: stem.map { $0 == UInt8(ascii: "-") ? UInt8(ascii: "_") : $0 }, as: UTF8.self)
    }
}

/// An ELF image read with libkmod's rules (libkmod-elf.c of kmod 30): the same
/// section lookup by name, the same tolerance of odd input, the same results,
/// with every read bounds-checked against the image. `ModuleFile` reads through
/// libelf and refuses a malformed file with its reason, as inspect must; the loader
/// facts must accept and refuse exactly what libkmod does (LoaderFactsTests), which
/// libelf's own checks would not, so this view reads the section table itself.
struct LoaderImage {
    let bytes: UnsafeRawBufferPointer
    let is64: Bool
    let bigEndian: Bool
    let sectionTable: Int
    let sectionCount: Int
    let headerSize: Int
    private(set) var names: UnsafeRawBufferPointer

    init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 16, bytes[0] == 0x7F, bytes[1] == 0x45, bytes[2] == 0x4C, bytes[3] == 0x46,
            bytes[4] == 1 || bytes[4] == 2, bytes[5] == 1 || bytes[5] == 2
        else { return nil }
        let is64 = bytes[4] == 2
        let bigEndian = bytes[5] == 2
        guard bytes.count > (is64 ? 64 : 52) else { return nil }
        func field(_ offset: Int, _ size: Int) -> UInt64 { Self.uint(bytes, bigEndian: bigEndian, offset, size) }
        let entrySize = Int(field(is64 ? 0x3A : 0x2E, 2))
        let count = Int(field(is64 ? 0x3C : 0x30, 2))
        let table = Int(clamping: field(is64 ? 0x28 : 0x20, is64 ? 8 : 4))
        guard entrySize == (is64 ? 64 : 40) else { return nil }
        let (tableEnd, overflow) = table.addingReportingOverflow(entrySize * count)
        guard !overflow, tableEnd <= bytes.count else { return nil }
        self.bytes = bytes
        self.is64 = is64
        self.bigEndian = bigEndian
        self.sectionTable = table
        self.sectionCount = count
        self.headerSize = entrySize
        self.names = UnsafeRawBufferPointer(start: nil, count: 0)
        // The section name table must end with a NUL, or libkmod refuses the file.
        guard let strings = sectionInfo(Int(field(is64 ? 0x3E : 0x32, 2))), strings.size > 0,
            bytes[strings.offset + strings.size - 1] == 0
        else { return nil }
        names = UnsafeRawBufferPointer(rebasing: bytes[strings.offset..<(strings.offset + strings.size)])
        locateKnownSections()
    }

    static func uint(_ bytes: UnsafeRawBufferPointer, bigEndian: Bool, _ offset: Int, _ size: Int) -> UInt64 {
        guard offset >= 0, offset <= bytes.count - size else { return UInt64.max }
        var value: UInt64 = 0
        if bigEndian {
            for index in 0..<size { value = value << 8 | UInt64(bytes[offset + index]) }
        } else {
            for index in stride(from: size - 1, through: 0, by: -1) { value = value << 8 | UInt64(bytes[offset + index]) }
        }
        return value
    }

    /// An unsigned field of `size` bytes; all ones when it lies outside the image, as in libkmod.
    func uint(_ offset: Int, _ size: Int) -> UInt64 { Self.uint(bytes, bigEndian: bigEndian, offset, size) }

    /// Offset, size and name offset of section `index`; nil for index 0, an index past
    /// the table, or contents past the end of the image.
    func sectionInfo(_ index: Int) -> (offset: Int, size: Int, nameOffset: Int)? {
        guard index != 0, index < sectionCount else { return nil }
        let header = sectionTable + index * headerSize
        let size = uint(header + (is64 ? 0x20 : 0x14), is64 ? 8 : 4)
        let offset = uint(header + (is64 ? 0x18 : 0x10), is64 ? 8 : 4)
        let nameOffset = uint(header, 4)
        let (end, overflow) = offset.addingReportingOverflow(size)
        guard !overflow, end <= UInt64(bytes.count) else { return nil }
        return (Int(offset), Int(size), Int(nameOffset))
    }

    /// The size field of the first section called `name`, read from its header alone
    /// (the kernel's struct module size check looks at `sh_size`, not at the contents).
    func sectionSize(named name: String) -> Int? {
        let wanted = Array(name.utf8)
        for index in 1..<max(sectionCount, 1) {
            let header = sectionTable + index * headerSize
            let nameOffset = Int(uint(header, 4))
            guard nameOffset < names.count else { continue }
            if names[nameOffset...].prefix(while: { $0 != 0 }).elementsEqual(wanted) {
                return Int(clamping: uint(header + (is64 ? 0x20 : 0x14), is64 ? 8 : 4))
            }
        }
        return nil
    }

    /// The sections the loader facts come from, each the first of its name as
    /// kmod_elf_get_section finds it, located in one pass over the section table.
    struct KnownSections {
        static let names: [StaticString] = [".modinfo", "__versions", ".strtab", ".symtab", "__ksymtab_strings"]
        var found = [UnsafeRawBufferPointer?](repeating: nil, count: names.count)
        var modinfo: UnsafeRawBufferPointer? { found[0] }
        var versions: UnsafeRawBufferPointer? { found[1] }
        var strtab: UnsafeRawBufferPointer? { found[2] }
        var symtab: UnsafeRawBufferPointer? { found[3] }
        var ksymtabStrings: UnsafeRawBufferPointer? { found[4] }
    }

    private(set) var known = KnownSections()

    private mutating func locateKnownSections() {
        let wanted = KnownSections.names.map { UnsafeRawBufferPointer(start: $0.utf8Start, count: $0.utf8CodeUnitCount) }
        var missing = wanted.count
        for index in 1..<max(sectionCount, 1) where missing > 0 {
            guard let info = sectionInfo(index), info.nameOffset < names.count else { continue }
            // The name table ends with a NUL (checked in init), so every name is terminated.
            let name = names[info.nameOffset...].prefix { $0 != 0 }
            for (slot, candidate) in wanted.enumerated() where known.found[slot] == nil && name.elementsEqual(candidate) {
                known.found[slot] = UnsafeRawBufferPointer(rebasing: bytes[info.offset..<(info.offset + info.size)])
                missing -= 1
            }
        }
    }

    /// The NUL-terminated string at `offset`, cut at the end of the image.
    func cString(at offset: Int) -> UnsafeRawBufferPointer {
        guard offset >= 0, offset < bytes.count else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        let tail = bytes[offset...]
        let end = tail.firstIndex(of: 0) ?? bytes.count
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<end])
    }

    /// The strings of a string section as libkmod splits them: leading padding
    /// skipped (a lone byte after it counts as nothing), NUL runs separate.
    static func strings(_ section: UnsafeRawBufferPointer) -> [Slice<UnsafeRawBufferPointer>] {
        var start = 0
        while start < section.count - 1, section[start] == 0 { start += 1 }
        if section.count - start <= 1 { return [] }
        return section[start...].split(separator: 0)
    }

    private var versionRecordSize: Int { 64 }
    private var crcSize: Int { is64 ? 8 : 4 }
    private var symbolSize: Int { is64 ? 24 : 16 }

    private struct SymbolEntry {
        var nameOffset: Int
        var info: UInt8
        var sectionIndex: Int
        var value: UInt64
    }

    private func symbol(at offset: Int) -> SymbolEntry {
        if is64 {
            return SymbolEntry(
                nameOffset: Int(uint(offset, 4)), info: UInt8(truncatingIfNeeded: uint(offset + 4, 1)),
                sectionIndex: Int(uint(offset + 6, 2)), value: uint(offset + 8, 8))
        }
        return SymbolEntry(
            nameOffset: Int(uint(offset, 4)), info: UInt8(truncatingIfNeeded: uint(offset + 12, 1)),
            sectionIndex: Int(uint(offset + 14, 2)), value: uint(offset + 4, 4))
    }

    /// `.symtab` and `.strtab` when both exist and the table is whole.
    private func symbolTable() -> (symbols: Range<Int>, strings: UnsafeRawBufferPointer)? {
        guard let strings = known.strtab, let symbols = known.symtab,
            symbols.count % symbolSize == 0, symbols.count > 0
        else { return nil }
        let base = symbols.baseAddress! - bytes.baseAddress!
        return (base..<(base + symbols.count), strings)
    }

    /// `__versions` as kmod_elf_get_modversions reads it (nil when absent, empty or
    /// malformed), and the dependency symbols as kmod_elf_get_dependency_symbols lists
    /// them: undefined symbols in symbol-table order, then the `__versions` entries no
    /// undefined symbol matched (module_layout); empty when libkmod reports an error.
    /// Each dependency carries the CRC of the first `__versions` entry of its name, the
    /// one the kernel's check_version finds.
    func versionsAndDependencies() -> (versions: [SymbolVersion]?, dependencies: [LoaderFacts.UndefinedSymbol]) {
        var records: [(name: UnsafeRawBufferPointer, crc: UInt64)] = []
        if let section = known.versions, section.count > 0, section.count % versionRecordSize == 0 {
            let base = section.baseAddress! - bytes.baseAddress!
            records.reserveCapacity(section.count / versionRecordSize)
            for record in stride(from: base, to: base + section.count, by: versionRecordSize) {
                records.append((cString(at: record + crcSize), uint(record, crcSize)))
            }
        }
        let firstRecord = FirstNameTable(records.map(\.name))
        // libkmod strips a leading dot from version names (ppc64), not from symbol names;
        // the kernel's lookup then compares the stripped ones.
        let dotted = records.contains { $0.name.first == UInt8(ascii: ".") }
        var strippedCRCs: [String: UInt64] = [:]
        if dotted {
            for record in records.reversed() { strippedCRCs[Self.stripped(record.name)] = record.crc }
        }
        func recordedCRC(_ name: UnsafeRawBufferPointer, _ symbol: String) -> UInt64? {
            if dotted { return strippedCRCs[symbol] }
            return firstRecord.find(name).map { records[$0].crc }
        }

        var matched = [String?](repeating: nil, count: records.count)
        var dependencies: [LoaderFacts.UndefinedSymbol] = []
        if let table = symbolTable() {
            let stringsBase = table.strings.baseAddress! - bytes.baseAddress!
            dependencies.reserveCapacity(records.count + 8)
            var failed = false
            for offset in stride(from: table.symbols.lowerBound + symbolSize, to: table.symbols.upperBound, by: symbolSize) {
                let entry = symbol(at: offset)
                guard entry.sectionIndex == 0 else { continue }
                guard entry.nameOffset < table.strings.count else {
                    failed = true
                    break
                }
                let name = cString(at: stringsBase + entry.nameOffset)
                if name.isEmpty { continue }
                let symbol = String(decoding: name, as: UTF8.self)
                if let index = firstRecord.find(name), matched[index] == nil { matched[index] = symbol }
                dependencies.append(.init(symbol: symbol, weak: entry.info >> 4 == 2, versionCRC: recordedCRC(name, symbol)))
            }
            if failed {
                dependencies = []
            } else {
                for (index, record) in records.enumerated() where matched[index] == nil {
                    let symbol = String(decoding: record.name, as: UTF8.self)
                    dependencies.append(.init(symbol: symbol, weak: false, versionCRC: recordedCRC(record.name, symbol)))
                }
            }
        }
        guard !records.isEmpty else { return (nil, dependencies) }
        let versions = records.enumerated().map { index, record in
            SymbolVersion(
                name: dotted ? Self.stripped(record.name) : matched[index] ?? String(decoding: record.name, as: UTF8.self),
                crc: record.crc)
        }
        return (versions, dependencies)
    }

    private static func stripped(_ name: UnsafeRawBufferPointer) -> String {
        String(decoding: name.first == UInt8(ascii: ".") ? UnsafeRawBufferPointer(rebasing: name.dropFirst()) : name, as: UTF8.self)
    }

    /// Exported symbols (kmod_elf_get_symbols): the `__crc_` symbols with their CRCs,
    /// or, when there are none, the strings of `__ksymtab_strings` with CRC 0.
    func exportedSymbols(module: String) -> [SymbolExport] {
        let prefix: [UInt8] = Array("__crc_".utf8)
        if let table = symbolTable() {
            let stringsBase = table.strings.baseAddress! - bytes.baseAddress!
            var result: [SymbolExport] = []
            var usable = true
            for offset in stride(from: table.symbols.lowerBound + symbolSize, to: table.symbols.upperBound, by: symbolSize) {
                let entry = symbol(at: offset)
                guard entry.nameOffset < table.strings.count else {
                    usable = false
                    break
                }
                let start = stringsBase + entry.nameOffset
                guard start <= bytes.count - prefix.count,
                    UnsafeRawBufferPointer(rebasing: bytes[start..<(start + prefix.count)]).elementsEqual(prefix)
                else { continue }
                let name = cString(at: start)
                result.append(SymbolExport(
                    symbol: String(decoding: name.dropFirst(prefix.count), as: UTF8.self), module: module,
                    crc: UInt32(truncatingIfNeeded: resolveCRC(entry.value, section: entry.sectionIndex))))
            }
            if usable, !result.isEmpty { return result }
        }
        guard let strings = known.ksymtabStrings else { return [] }
        return Self.strings(strings).map { SymbolExport(symbol: String(decoding: $0, as: UTF8.self), module: module, crc: 0) }
    }

    /// An `__crc_` symbol's value: absolute, or an offset into the section holding the CRC.
    private func resolveCRC(_ value: UInt64, section index: Int) -> UInt64 {
        if index == 0xFFF1 || index == 0 { return value }
        guard let info = sectionInfo(index) else { return UInt64.max }
        guard value <= UInt64(info.size) &- 4 else { return UInt64.max }
        return uint(info.offset + Int(value), 4)
    }
}

/// The first index of each name in a list of byte strings, found by bytes (no String
/// hashing): the lookup libkmod does with a linear search per undefined symbol.
struct FirstNameTable {
    private var slots: [Int32]
    private let names: [UnsafeRawBufferPointer]

    init(_ names: [UnsafeRawBufferPointer]) {
        self.names = names
        var capacity = 16
        while capacity < names.count * 2 { capacity <<= 1 }
        slots = [Int32](repeating: -1, count: names.isEmpty ? 0 : capacity)
        for (index, name) in names.enumerated() where find(name) == nil {
            var slot = Self.hash(name) & (slots.count - 1)
            while slots[slot] >= 0 { slot = (slot + 1) & (slots.count - 1) }
            slots[slot] = Int32(index)
        }
    }

    func find(_ name: UnsafeRawBufferPointer) -> Int? {
        guard !slots.isEmpty else { return nil }
        var slot = Self.hash(name) & (slots.count - 1)
        while slots[slot] >= 0 {
            let index = Int(slots[slot])
            if names[index].elementsEqual(name) { return index }
            slot = (slot + 1) & (slots.count - 1)
        }
        return nil
    }

    /// FNV-1a.
    private static func hash(_ name: UnsafeRawBufferPointer) -> Int {
        var value: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name { value = (value ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return Int(truncatingIfNeeded: value ^ (value >> 32))
    }
}
