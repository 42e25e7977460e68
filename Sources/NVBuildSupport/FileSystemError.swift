import Foundation

/// File-system failures in the project's words. Foundation's own text (`Error Domain=
/// NSCocoaErrorDomain Code=516 "…" UserInfo={…}`) is neither one line nor plain, and
/// names no remedy: every place that reports a file-system error turns it into one
/// sentence here, naming the path and the cause.
public enum FileSystemError {
    /// The cause in plain words, e.g. "a file with that name exists". Prefers the system
    /// error underneath a Foundation error: it says what actually happened.
    public static func cause(_ error: any Error) -> String {
        if let code = errno(of: error) { return cause(errno: code) }
        if let cocoa = error as? CocoaError { return cause(cocoaCode: cocoa.code.rawValue) }
        let ns = error as NSError
        if ns.domain == NSCocoaErrorDomain { return cause(cocoaCode: ns.code) }
        if !isFoundation(error) { return UserError.describe(error) }
        return "an unexpected error (\(ns.domain) \(ns.code))"
    }

    /// The system error number behind an error, when there is one.
    public static func errno(of error: any Error) -> Int32? {
        if let posix = error as? POSIXError { return posix.code.rawValue }
        if let atomic = error as? AtomicFileError { return atomic.errno }
        if let cocoa = error as? CocoaError, let underlying = cocoa.underlying { return errno(of: underlying) }
        let ns = error as NSError
        if ns.domain == NSPOSIXErrorDomain { return Int32(ns.code) }
        if ns.domain == NSCocoaErrorDomain, let underlying = ns.userInfo[NSUnderlyingErrorKey] as? any Error {
            return errno(of: underlying)
        }
        return nil
    }

    /// The path Foundation attached to an error, when it did.
    public static func path(of error: any Error) -> String? {
        if let cocoa = error as? CocoaError, let path = cocoa.filePath { return path }
        let info = (error as NSError).userInfo
        if let path = info[NSFilePathErrorKey] as? String { return path }
        return (info[NSURLErrorKey] as? URL)?.path
    }

    /// Whether the error comes from Foundation or the system rather than from the project.
    public static func isFoundation(_ error: any Error) -> Bool {
        if error is CocoaError || error is POSIXError { return true }
        let domain = (error as NSError).domain
        return domain == NSCocoaErrorDomain || domain == NSPOSIXErrorDomain
    }

    public static func cause(errno code: Int32) -> String {
        switch code {
        case ENOENT: return "no such file or folder"
        case EEXIST: return "a file with that name exists"
        case EACCES: return "permission denied"
        case EPERM: return "the operation is not permitted"
        case ENAMETOOLONG: return "the name is too long (a file name has at most 255 bytes, a path 4095)"
        case ENOTDIR: return "a part of the path is a file, not a folder"
        case EISDIR: return "it is a folder"
        case ENOTEMPTY: return "the folder is not empty"
        case ENOSPC: return "no space is left on the device"
        case EDQUOT: return "the disk quota is exceeded"
        case EROFS: return "the file system is read-only"
        case ELOOP: return "too many levels of symbolic links"
        case EXDEV: return "it is on another file system"
        case EIO: return "an input/output error on the device"
        case EMFILE, ENFILE: return "too many files are open"
        case EBUSY, ETXTBSY: return "the file is busy"
        case EFBIG: return "the file is too large"
        default: return String(cString: strerror(code)).lowercased()
        }
    }

    /// Foundation's codes (Foundation.CocoaError.Code) when no system error is attached.
    static func cause(cocoaCode code: Int) -> String {
        switch code {
        case 4, 260: return cause(errno: ENOENT)
        case 257, 513: return cause(errno: EACCES)
        case 258, 514: return "the name is not valid here (too long, or a part of the path is not a folder)"
        case 259: return "it is not in the expected format"
        case 261, 517: return "it is not UTF-8 text"
        case 263: return "it is too large"
        case 516: return cause(errno: EEXIST)
        case 640: return cause(errno: ENOSPC)
        case 642: return cause(errno: EROFS)
        case 256...511: return "it could not be read"
        case 512...767: return "it could not be written"
        default: return "the file operation failed"
        }
    }

    /// "cannot <action> <path>: <cause>[ (<remedy>)]".
    public static func sentence(cannot action: String, _ path: String, _ error: any Error, remedy: String? = nil) -> String {
        "cannot \(action) \(path): \(cause(error))" + (remedy.map { " (\($0))" } ?? "")
    }
}

extension UserError {
    /// A failed file-system operation as one line: "cannot create /x/y: a file with that
    /// name exists (choose another --output)". An error that already is a `UserError`
    /// passes unchanged.
    public static func fileSystem(cannot action: String, _ path: String, _ error: any Error, remedy: String? = nil,
                                  kind: Kind = .environment) -> UserError {
        if let user = error as? UserError { return user }
        // An atomic write names the step and the file itself (the folder, when creating it failed).
        if let atomic = error as? AtomicFileError { return UserError(kind, atomic.description + (remedy.map { " (\($0))" } ?? "")) }
        return UserError(kind, FileSystemError.sentence(cannot: action, path, error, remedy: remedy))
    }

    /// Any error as one line in the project's words: its own message for the project's
    /// errors, a plain sentence (with the path Foundation names) for Foundation's.
    public static func describe(_ error: any Error) -> String {
        if let user = error as? UserError { return user.message }
        if FileSystemError.isFoundation(error) {
            let cause = FileSystemError.cause(error)
            guard let path = FileSystemError.path(of: error) else { return cause }
            // Foundation's codes say which way the operation went: 256-511 reading, 512-767 writing.
            switch (error as NSError).domain == NSCocoaErrorDomain ? (error as NSError).code : 0 {
            case 256..<512: return "cannot read \(path): \(cause)"
            case 512..<768: return "cannot write \(path): \(cause)"
            default: return "\(path): \(cause)"
            }
        }
        let text = String(describing: error)
        return text.split(separator: "\n", omittingEmptySubsequences: true).joined(separator: "; ")
    }
}
