import Foundation

/// Writes files so that a reader (or a later run after a crash) sees either
/// the old content or the new, never a mix: write a temporary sibling, fsync,
/// then rename over the target.
public enum AtomicFile {
    /// `durable` also survives a power loss (fsync before the rename); without it the
    /// file is still old or new after an interrupted run, which is what generated
    /// files need, at a fraction of the cost.
    public static func write(_ data: Data, to path: String, durable: Bool = true) throws {
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let temporary = "\(directory)/.\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw AtomicFileError.cannotCreate(temporary, errno) }
        var ok = false
        defer {
            if !ok { unlink(temporary) }
        }
        try data.withUnsafeBytes { (buffer: UnsafeRawBufferPointer) in
            var offset = 0
            while offset < buffer.count {
                let n = Foundation.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    let e = errno
                    close(fd)
                    throw AtomicFileError.cannotWrite(temporary, e)
                }
                offset += n
            }
        }
        if durable { fsync(fd) }
        close(fd)
        guard rename(temporary, path) == 0 else { throw AtomicFileError.cannotRename(temporary, path, errno) }
        ok = true
    }

    public static func write(_ text: String, to path: String, durable: Bool = true) throws {
        try write(Data(text.utf8), to: path, durable: durable)
    }
}

public enum AtomicFileError: Error, CustomStringConvertible {
    case cannotCreate(String, Int32)
    case cannotWrite(String, Int32)
    case cannotRename(String, String, Int32)

    public var description: String {
        switch self {
        case .cannotCreate(let p, let e): return "\(p): cannot create: \(String(cString: strerror(e)))"
        case .cannotWrite(let p, let e): return "\(p): cannot write: \(String(cString: strerror(e)))"
        case .cannotRename(let from, let to, let e):
            return "\(to): cannot rename \(from) into place: \(String(cString: strerror(e)))"
        }
    }
}
