import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Copies one file so that the copy shares nothing writable with the original:
/// a reflink (FICLONE) where the filesystem offers one, bytes otherwise. Never a
/// hard link: a build step that writes its copy in place must not reach the
/// user's file.
public enum FileCopy {
    public enum Method: Sendable, Equatable {
        /// The filesystem shares the blocks copy-on-write (btrfs, XFS, bcachefs).
        case reflinked
        /// The bytes were read and written.
        case copied
    }

    /// `_IOW(0x94, 9, int)` from <linux/fs.h>: clone all of a file's extents.
    private static let ficlone: UInt = 0x4004_9409

    /// Copies `source` to `destination`, which must not exist (it is created with
    /// O_EXCL and never followed if it is a link). The copy gets the source's
    /// permission bits and its access and modification times.
    @discardableResult
    public static func copy(from source: String, to destination: String) throws -> Method {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else {
            throw UserError(.environment, "\(source): cannot read: \(String(cString: strerror(errno)))")
        }
        defer { close(input) }
        var st = stat()
        guard fstat(input, &st) == 0 else {
            throw UserError(.environment, "\(source): cannot read: \(String(cString: strerror(errno)))")
        }
        let output = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard output >= 0 else {
            throw UserError(.environment, "\(destination): cannot create: \(String(cString: strerror(errno)))")
        }
        var closed = false
        defer { if !closed { close(output) } }
        func failed(_ what: String) -> UserError {
            let reason = String(cString: strerror(errno))
            unlink(destination)
            return UserError(.environment, "\(destination): cannot \(what) \(source) there: \(reason)")
        }
        let method: Method
        if ioctl(output, ficlone, input) == 0 {
            method = .reflinked
        } else {
            // EOPNOTSUPP (ext4, tmpfs), EXDEV (another filesystem), EINVAL: copy the bytes.
            method = .copied
            let size = 1 << 20
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
            defer { buffer.deallocate() }
            while true {
                let n = read(input, buffer, size)
                if n == 0 { break }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw failed("copy")
                }
                var written = 0
                while written < n {
                    let w = write(output, buffer + written, n - written)
                    if w < 0 {
                        if errno == EINTR { continue }
                        throw failed("copy")
                    }
                    written += w
                }
            }
        }
        var times = [st.st_atim, st.st_mtim]
        guard fchmod(output, st.st_mode & 0o777) == 0, futimens(output, &times) == 0 else { throw failed("copy") }
        closed = true
        guard close(output) == 0 else { throw failed("copy") }
        return method
    }
}
