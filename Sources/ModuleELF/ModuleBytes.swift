import Glibc

/// The bytes of one module file (or its decompressed image), owned until deinit.
/// Uncompressed files are mapped, so pages that are never read are never loaded.
final class ModuleBytes {
    let base: UnsafeMutableRawPointer?
    let count: Int
    private let release: (UnsafeMutableRawPointer, Int) -> Void

    init(base: UnsafeMutableRawPointer?, count: Int, release: @escaping (UnsafeMutableRawPointer, Int) -> Void) {
        self.base = base
        self.count = count
        self.release = release
    }

    deinit {
        if let base { release(base, count) }
    }

    var buffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Maps `path` privately (copy-on-write), so libelf may use the bytes in place.
    static func map(path: String) throws(ModuleReadError) -> ModuleBytes {
        // stat before open: opening a FIFO for reading blocks until a writer appears, and a
        // device's open may have side effects. O_NONBLOCK covers a swap between stat and open.
        var before = stat()
        if stat(path, &before) != 0 { throw ModuleReadError(path: path, .unreadable(String(cString: strerror(errno)))) }
        if (before.st_mode & S_IFMT) != S_IFREG { throw ModuleReadError(path: path, .notRegularFile) }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 { throw ModuleReadError(path: path, .unreadable(String(cString: strerror(errno)))) }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) != 0 { throw ModuleReadError(path: path, .unreadable(String(cString: strerror(errno)))) }
        if (info.st_mode & S_IFMT) != S_IFREG { throw ModuleReadError(path: path, .notRegularFile) }
        let size = Int(info.st_size)
        if size == 0 { throw ModuleReadError(path: path, .empty) }
        guard let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw ModuleReadError(path: path, .unreadable(String(cString: strerror(errno))))
        }
        return ModuleBytes(base: mapped, count: size, release: { munmap($0, $1) })
    }

    /// A buffer that grows as a decompressor writes into it; `finish` hands it over.
    struct Growable {
        var base: UnsafeMutableRawPointer
        var capacity: Int
        var used = 0
        let limit: Int

        init(capacityHint: Int, limit: Int) {
            let start = max(4096, min(capacityHint, limit))
            capacity = start
            base = malloc(start)!
            self.limit = limit
        }

        /// Doubles the capacity; false once the limit is reached.
        mutating func grow() -> Bool {
            guard capacity < limit else { return false }
            let next = min(limit, capacity * 2)
            guard let moved = realloc(base, next) else { return false }
            base = moved
            capacity = next
            return true
        }

        func discard() { free(base) }

        func finish() -> ModuleBytes {
            ModuleBytes(base: base, count: used, release: { pointer, _ in free(pointer) })
        }
    }
}
