/// Why a module file could not be read: names the file and the problem in one line.
public struct ModuleReadError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Problem: Sendable, Equatable {
        case unreadable(String)
        case notRegularFile
        case empty
        case notELF
        case truncated(String)
        case unsupportedClass(String)
        case wrongMachine(found: UInt16, expected: UInt16)
        case notRelocatable(UInt16)
        case badSectionTable(String)
        case sectionOutOfBounds(name: String, offset: UInt64, size: UInt64, fileSize: Int)
        case malformed(String)
        /// Refused with libkmod's rules, which the loader facts follow.
        case notLoadable(String)
        case decompression(format: ModuleCompression, detail: String)
        case tooLarge(limit: Int)
        case libelf(String)
    }

    public var path: String
    public var problem: Problem

    public init(path: String, _ problem: Problem) {
        self.path = path
        self.problem = problem
    }

    public var description: String { "\(path): \(detail)" }

    /// The file could not be read at all (missing, no permission, not a regular file), as
    /// opposed to read and found not to be a sound module: exit 2 rather than 1.
    public var isUnreadable: Bool {
        switch problem {
        case .unreadable, .notRegularFile: return true
        default: return false
        }
    }

    /// The problem without the file name, with what to do about it where there is a remedy.
    public var detail: String {
        switch problem {
        case .unreadable(let reason): return "cannot read the file: \(reason)"
        case .notRegularFile: return "not a regular file; pass a .ko, .ko.xz, .ko.zst or .ko.gz file"
        case .empty: return "the file is empty (0 bytes); rebuild or reinstall the module"
        case .notELF: return "not an ELF file (no ELF magic after decompression); pass a kernel module"
        case .truncated(let what): return "truncated: \(what); the file is incomplete, rebuild or re-copy it"
        case .unsupportedClass(let what): return "unsupported ELF identification: \(what)"
        case .wrongMachine(let found, let expected):
            return "ELF for machine \(machineName(found)) (e_machine \(found)), not \(machineName(expected)); "
                + "inspect it on a matching host or rebuild for this architecture"
        case .notRelocatable(let type):
            return "ELF type \(type) is not a relocatable object (ET_REL); kernel modules are ET_REL"
        case .badSectionTable(let what): return "corrupt section table: \(what)"
        case .sectionOutOfBounds(let name, let offset, let size, let fileSize):
            return "section \(name) (offset \(offset), size \(size)) extends past the end of the file (\(fileSize) bytes)"
        case .malformed(let what): return "malformed module: \(what)"
        case .notLoadable(let what): return "not a kernel module (\(what))"
        case .decompression(let format, let detail): return "corrupt \(format.rawValue) stream: \(detail)"
        case .tooLarge(let limit): return "decompressed image exceeds the \(limit >> 20) MiB limit"
        case .libelf(let what): return "libelf: \(what)"
        }
    }
}

func machineName(_ machine: UInt16) -> String {
    switch machine {
    case 3: return "i386"
    case 8: return "MIPS"
    case 20: return "PowerPC"
    case 21: return "PowerPC64"
    case 22: return "s390"
    case 40: return "ARM"
    case 62: return "x86-64"
    case 183: return "AArch64"
    case 243: return "RISC-V"
    case 258: return "LoongArch"
    default: return "#\(machine)"
    }
}
