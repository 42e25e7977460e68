import Glibc
import NVBuildSupport

/// kmod's binary module indexes (modules.dep.bin, modules.alias.bin, ...), checked
/// before libkmod maps them. libkmod trusts these files: the Debian 12 release follows
/// node offsets and string lengths unchecked, so a truncated or corrupt index crashes
/// the process that reads it. The format is depmod's: big-endian 32-bit words; a
/// header (magic, version, root node); each node a NUL-terminated prefix, a children
/// table (first and last character, one offset per character in between) and values
/// (a count, then a priority and a NUL-terminated string each), present as the flag
/// bits of the offset that points at the node say.
public enum ModuleIndex {
    static let magic: UInt32 = 0xB007_F457
    /// libkmod checks the major version only (the high half of the version word).
    static let majorVersion: UInt32 = 2
    static let headerSize = 12
    static let prefixFlag: UInt32 = 0x8000_0000
    static let valuesFlag: UInt32 = 0x4000_0000
    static let childrenFlag: UInt32 = 0x2000_0000
    static let knownFlags: UInt32 = prefixFlag | valuesFlag | childrenFlag
    static let offsetMask: UInt32 = 0x0FFF_FFFF
    /// depmod writes 7-bit ASCII keys only, and libkmod reads a children table into a
    /// 128-entry array: a wider table overflows it.
    static let childLimit = 128
    /// libkmod's wildcard search recurses once per node on a key's path; a key longer
    /// than any path could be bounds that depth (real keys are a few hundred bytes).
    static let maximumKeyLength = 4096

    /// The index files libkmod reads for a lookup or a dry run, in its order. Only
    /// modules.dep.bin is indispensable; libkmod treats the rest as absent when missing.
    public static let fileNames = [
        "modules.dep.bin", "modules.alias.bin", "modules.symbols.bin", "modules.builtin.alias.bin", "modules.builtin.bin",
    ]

    /// Why an index cannot be used: the file and what is wrong with it.
    public struct Corruption: Error, Sendable, Equatable, CustomStringConvertible {
        public var path: String
        public var problem: String
        public var description: String { "\(path): \(problem)" }
    }

    /// What a sound index holds.
    public struct Summary: Sendable, Equatable {
        public var nodes: Int
        public var values: Int
    }

    /// Checks the index at `path` (a regular file, stat'ed before it is opened).
    public static func validate(path: String) throws(Corruption) -> Summary {
        var info = stat()
        guard stat(path, &info) == 0 else { throw Corruption(path: path, problem: "cannot read the index: \(String(cString: strerror(errno)))") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw Corruption(path: path, problem: "not a regular file") }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw Corruption(path: path, problem: "cannot read the index: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { throw Corruption(path: path, problem: "not a regular file") }
        let size = Int(info.st_size)
        guard size >= headerSize else { throw Corruption(path: path, problem: "\(size) bytes, shorter than an index header") }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw Corruption(path: path, problem: "cannot map the index: \(String(cString: strerror(errno)))")
        }
        defer { munmap(mapped, size) }
        return try validate(UnsafeRawBufferPointer(start: mapped, count: size), path: path)
    }

    /// Checks an index held in memory: header, then every node reachable from the root,
    /// walked with an explicit stack (no recursion on untrusted depth), each node once.
    public static func validate(_ bytes: UnsafeRawBufferPointer, path: String) throws(Corruption) -> Summary {
        let size = bytes.count
        func fail(_ problem: String) -> Corruption { Corruption(path: path, problem: problem) }
        func word(at offset: Int) -> UInt32 { UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
        /// The offset of the NUL that ends the string at `start`, or nil when the file ends first.
        func stringEnd(from start: Int) -> Int? {
            guard start < size, let base = bytes.baseAddress,
                let nul = memchr(base + start, 0, size - start)
            else { return nil }
            return base.distance(to: UnsafeRawPointer(nul))
        }

        guard size >= headerSize else { throw fail("\(size) bytes, shorter than an index header") }
        let foundMagic = word(at: 0)
        guard foundMagic == magic else { throw fail("not a module index (magic 0x\(hex(foundMagic)), expected 0x\(hex(magic)))") }
        let version = word(at: 4)
        guard version >> 16 == majorVersion else {
            throw fail("index format version \(version >> 16).\(version & 0xFFFF), libkmod reads version \(majorVersion)")
        }
        guard size <= Int(offsetMask) + 1 else { throw fail("\(size) bytes, larger than an index can address") }

        // One bit per byte offset: a node reached twice means a cycle (or a shared
        // subtree, which depmod never writes), and either would make libkmod loop.
        var visited = [UInt64](repeating: 0, count: size / 64 + 1)
        var pending: [(link: UInt32, keyLength: Int, from: Int)] = [(word(at: 8), 0, 8)]
        var summary = Summary(nodes: 0, values: 0)
        while let (link, keyLength, from) = pending.popLast() {
            let flags = link & ~offsetMask
            let offset = Int(link & offsetMask)
            guard flags & ~knownFlags == 0 else { throw fail("node link at offset \(from) has unknown flag bits 0x\(hex(flags))") }
            guard offset >= headerSize, offset < size else {
                throw fail("node link at offset \(from) points to \(offset), outside the index's nodes (\(headerSize)..<\(size))")
            }
            let (slot, bit) = (offset >> 6, UInt64(1) << UInt64(offset & 63))
            guard visited[slot] & bit == 0 else { throw fail("node at offset \(offset) is linked twice (a cycle)") }
            visited[slot] |= bit
            summary.nodes += 1

            var cursor = offset
            var length = keyLength
            if flags & prefixFlag != 0 {
                guard let end = stringEnd(from: cursor) else { throw fail("the prefix of the node at offset \(offset) runs past the end of the file") }
                length += end - cursor
                cursor = end + 1
            }
            guard length <= maximumKeyLength else { throw fail("a key reaches \(length) bytes at the node at offset \(offset), beyond any real index") }
            if flags & childrenFlag != 0 {
                guard cursor + 2 <= size else { throw fail("the children of the node at offset \(offset) run past the end of the file") }
                let first = Int(bytes[cursor]), last = Int(bytes[cursor + 1])
                guard first <= last, last < childLimit else {
                    throw fail("the node at offset \(offset) has children for characters \(first)...\(last), not a 7-bit ASCII range")
                }
                let table = cursor + 2
                let count = last - first + 1
                guard table + 4 * count <= size else { throw fail("the children of the node at offset \(offset) run past the end of the file") }
                for index in 0..<count {
                    let child = word(at: table + 4 * index)
                    // A zero offset is a character without a child.
                    if child & offsetMask != 0 { pending.append((child, length + 1, table + 4 * index)) }
                }
                cursor = table + 4 * count
            }
            if flags & valuesFlag != 0 {
                guard cursor + 4 <= size else { throw fail("the values of the node at offset \(offset) run past the end of the file") }
                let count = Int(word(at: cursor))
                cursor += 4
                // Each value takes at least a priority and a NUL.
                guard count <= (size - cursor) / 5 else {
                    throw fail("the node at offset \(offset) claims \(count) values, more than the file can hold")
                }
                for _ in 0..<count {
                    guard cursor + 4 <= size, let end = stringEnd(from: cursor + 4) else {
                        throw fail("a value of the node at offset \(offset) runs past the end of the file")
                    }
                    cursor = end + 1
                }
                summary.values += count
            }
        }
        return summary
    }

    /// Checks every index libkmod would read in `moduleDirectory`. A corrupt one, or a
    /// missing modules.dep.bin, is an environment error naming the file and the depmod
    /// run that rewrites it; a missing optional index is a warning.
    public static func validateTree(_ moduleDirectory: String) throws(UserError) -> [Diagnostic] {
        let remedy = "rewrite it with " + depmodCommand(moduleDirectory)
        var warnings: [Diagnostic] = []
        for name in fileNames {
            let path = moduleDirectory + "/" + name
            if access(path, F_OK) != 0, errno == ENOENT {
                if name == "modules.dep.bin" {
                    throw UserError(.environment, "\(path) is missing: libkmod finds no module without it; \(remedy)")
                }
                // modules.builtin.alias.bin is recent; older trees lack it and libkmod does not miss it.
                if name != "modules.builtin.alias.bin" {
                    warnings.append(.warning("index missing: lookups through it find nothing", file: path, remedy: remedy))
                }
                continue
            }
            do {
                _ = try validate(path: path)
            } catch {
                throw UserError(.environment, "\(error.path): corrupt module index: \(error.problem); \(remedy)")
            }
        }
        return warnings
    }

    /// "depmod -b ROOT RELEASE", ROOT and RELEASE taken from a `ROOT/lib/modules/RELEASE` directory.
    public static func depmodCommand(_ moduleDirectory: String) -> String {
        var directory = moduleDirectory
        while directory.count > 1, directory.hasSuffix("/") { directory.removeLast() }
        let parts = directory.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count >= 3, parts[parts.count - 3] == "lib", parts[parts.count - 2] == "modules" {
            let release = parts[parts.count - 1]
            let root = parts.dropLast(3).joined(separator: "/")
            return "depmod -b \(root.isEmpty ? "/" : root) \(release)"
        }
        return "depmod -b ROOT RELEASE, where \(moduleDirectory) is ROOT/lib/modules/RELEASE"
    }

    private static func hex(_ value: UInt32) -> String { String(value, radix: 16, uppercase: true) }
}
