import Foundation

/// The one way the project reads a text input (Kbuild, Makefile, .mk fragment,
/// dkms.conf, catalog file, template): the whole file, which must be UTF-8. A file that
/// is not is an error naming it and the offset of its first invalid byte, never a
/// Foundation error without a name, nor text silently changed by replacement characters.
public enum TextFile {
    /// The file's text. Throws a one-line `UserError` (`kind`, by default an environment
    /// error: exit 2) when it cannot be read, is not a regular file, or is not UTF-8;
    /// `remedy` is said when it cannot be opened.
    public static func read(_ path: String, kind: UserError.Kind = .environment, remedy: String? = nil) throws(UserError) -> String {
        guard let text = try read(path, kind: kind, remedy: remedy, missingIsNil: false) else {
            throw UserError(kind, FileSystemError.sentence(cannot: "read", path, POSIXError(.ENOENT), remedy: remedy))
        }
        return text
    }

    /// As `read`, but nil when there is no such file (an optional input).
    public static func readIfPresent(_ path: String, kind: UserError.Kind = .environment, remedy: String? = nil) throws(UserError) -> String? {
        try read(path, kind: kind, remedy: remedy, missingIsNil: true)
    }

    private static func read(_ path: String, kind: UserError.Kind, remedy: String?, missingIsNil: Bool) throws(UserError) -> String? {
        // Non-blocking open: a FIFO or device named like a text file must not hang the run.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            let code = errno
            if missingIsNil && code == ENOENT { return nil }
            throw UserError(kind, FileSystemError.sentence(cannot: "read", path, POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO), remedy: remedy))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw UserError(kind, FileSystemError.sentence(cannot: "read", path, POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)))
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            let what = info.st_mode & S_IFMT == S_IFDIR ? "a folder" : "not a regular file"
            throw UserError(kind, "\(path): \(what), where a text file was expected")
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(info.st_size))
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress!, $0.count) }
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                throw UserError(kind, FileSystemError.sentence(cannot: "read", path, POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)))
            }
            bytes += buffer[0..<n]
        }
        if let offset = firstInvalidUTF8(bytes) {
            let line = bytes[..<offset].reduce(1) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
            let byte = String(bytes[offset], radix: 16, uppercase: false)
            throw UserError(kind, "\(path):\(line): not UTF-8 text: byte 0x\(byte.count == 1 ? "0" + byte : byte) at offset \(offset) is invalid (save the file as UTF-8)")
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The offset of the first byte that does not start a well-formed UTF-8 sequence
    /// (overlong forms, surrogates and values above U+10FFFF are ill-formed); nil when
    /// all of `bytes` is UTF-8.
    public static func firstInvalidUTF8(_ bytes: [UInt8]) -> Int? {
        var i = 0
        let n = bytes.count
        while i < n {
            let b = bytes[i]
            if b < 0x80 {
                i += 1
                continue
            }
            // The lead byte fixes the length and the range of the second byte (Unicode Table 3-7).
            let length: Int, low: UInt8, high: UInt8
            switch b {
            case 0xC2...0xDF: (length, low, high) = (2, 0x80, 0xBF)
            case 0xE0: (length, low, high) = (3, 0xA0, 0xBF)
            case 0xE1...0xEC, 0xEE...0xEF: (length, low, high) = (3, 0x80, 0xBF)
            case 0xED: (length, low, high) = (3, 0x80, 0x9F)
            case 0xF0: (length, low, high) = (4, 0x90, 0xBF)
            case 0xF1...0xF3: (length, low, high) = (4, 0x80, 0xBF)
            case 0xF4: (length, low, high) = (4, 0x80, 0x8F)
            default: return i
            }
            // A sequence broken anywhere is reported at its first byte (as a Latin-1 "é"
            // followed by ASCII is: the é is the invalid byte).
            guard i + 1 < n, (low...high).contains(bytes[i + 1]) else { return i }
            for k in 2..<length {
                guard i + k < n, (0x80...0xBF).contains(bytes[i + k]) else { return i }
            }
            i += length
        }
        return nil
    }
}
