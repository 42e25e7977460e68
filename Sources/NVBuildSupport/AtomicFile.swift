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
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw AtomicFileError(path: directory, step: .createDirectory, errno: FileSystemError.errno(of: error) ?? EIO)
        }
        let temporary = "\(directory)/.\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        // The temporary's name is longer than the target's: report the target's own problem.
        guard fd >= 0 else { throw AtomicFileError(path: path, step: .write, errno: errno) }
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
                    throw AtomicFileError(path: path, step: .write, errno: e)
                }
                offset += n
            }
        }
        if durable { fsync(fd) }
        close(fd)
        guard rename(temporary, path) == 0 else { throw AtomicFileError(path: path, step: .replace, errno: errno) }
        ok = true
    }

    public static func write(_ text: String, to path: String, durable: Bool = true) throws {
        try write(Data(text.utf8), to: path, durable: durable)
    }
}

/// Why an atomic write failed, naming the file the caller asked for (never the temporary).
public struct AtomicFileError: Error, CustomStringConvertible, Sendable {
    public enum Step: Sendable { case createDirectory, write, replace }
    public var path: String
    public var step: Step
    public var errno: Int32

    public var description: String {
        let action = switch step {
        case .createDirectory: "create the folder"
        case .write: "write"
        case .replace: "replace"
        }
        return "cannot \(action) \(path): \(FileSystemError.cause(errno: errno))"
    }
}
