import Dispatch
import Foundation

/// A fixed number of slots for concurrent jobs (compiler processes), handed out
/// in request order. Work of different kinds can then be started as soon as it
/// is known, while the machine never runs more than `count` jobs at once.
///
/// Made with `jobserver(_:helper:)`, the slots are also tokens of a GNU make
/// jobserver (a FIFO holding one byte per slot): every make started through
/// `jobserverCommand` takes its extra jobs from the same tokens, so make's
/// compilers and this process's own jobs together never exceed the count.
public actor JobSlots {
    private var free: Int
    private var waiting: [CheckedContinuation<Void, Never>] = []
    private var waitingUrgent: [CheckedContinuation<Void, Never>] = []
    /// The shared token pool, when these slots are a jobserver's.
    public nonisolated let jobserver: Jobserver?
    /// How many jobs run at once at most.
    public nonisolated let count: Int

    public init(_ count: Int) {
        free = max(1, count)
        self.count = max(1, count)
        jobserver = nil
    }

    private init(_ count: Int, jobserver: Jobserver) {
        free = max(1, count)
        self.count = max(1, count)
        self.jobserver = jobserver
    }

    /// Slots that are a GNU make jobserver's tokens: a FIFO in a private folder holding
    /// `count` tokens. `helper` is the argv prefix of a program that opens the FIFO and
    /// executes make with it (`Jobserver.execute`); nvbuild's hidden `jobserver-exec`.
    public static func jobserver(_ count: Int, helper: [String]) throws -> JobSlots {
        JobSlots(max(1, count), jobserver: try Jobserver(tokens: max(1, count), helper: helper))
    }

    /// How many callers wait for a slot.
    public var queued: Int { waiting.count + waitingUrgent.count }

    /// Runs `body` while holding one slot; urgent work is served before other waiting work.
    public func run<T: Sendable>(urgent: Bool = false, _ body: @Sendable () async throws -> T) async rethrows -> T {
        await acquire(urgent: urgent)
        // This process's waiters line up here (urgent first); the pool's token comes next.
        let token = await jobserver?.take()
        defer {
            if let token { jobserver?.give(token) }
            release()
        }
        return try await body()
    }

    private func acquire(urgent: Bool) async {
        if free > 0 {
            free -= 1
            return
        }
        await withCheckedContinuation { continuation in
            if urgent { waitingUrgent.append(continuation) } else { waiting.append(continuation) }
        }
    }

    private func release() {
        if !waitingUrgent.isEmpty {
            waitingUrgent.removeFirst().resume()
        } else if !waiting.isEmpty {
            waiting.removeFirst().resume()
        } else {
            free += 1
        }
    }

    /// The argv that runs `arguments` (a make command without -j) as a client of these
    /// slots' jobserver; the arguments unchanged when the slots are not a jobserver's.
    /// The caller holds one slot (`run`) while it runs: make's own first job uses it.
    public nonisolated func jobserverCommand(_ arguments: [String]) -> [String] {
        guard let jobserver else { return arguments }
        return jobserver.helper + [jobserver.path, String(jobserver.tokens), "--"] + arguments
    }
}

/// GNU make's jobserver as a named FIFO: each byte in it is one job slot. make 4.3
/// reads `--jobserver-auth=R,W` (file descriptors it inherited) from MAKEFLAGS; a
/// helper opens the FIFO on two descriptors and executes make (`execute`).
public final class Jobserver: Sendable {
    public let path: String
    public let tokens: Int
    public let helper: [String]
    private let directory: String
    /// Opened read-write: reads block until a token is there, and the FIFO never sees
    /// its last writer go.
    private let descriptor: Int32
    /// One reader at a time: a waiting read blocks this queue's thread, not the pool's.
    private let readers = DispatchQueue(label: "nvbuild.jobserver")
    private let cleanup: Int

    init(tokens: Int, helper: [String]) throws {
        var template = Array((FileManager.default.temporaryDirectory.path + "/nvbuild-jobserver-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw UserError(.environment, "\(FileManager.default.temporaryDirectory.path): cannot create the jobserver folder: \(String(cString: strerror(errno))); set TMPDIR to a writable folder")
        }
        directory = String(cString: made)
        path = directory + "/jobserver"
        guard mkfifo(path, 0o600) == 0 else {
            let cause = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: directory)
            throw UserError(.environment, "\(path): cannot create the jobserver FIFO: \(cause); set TMPDIR to a folder on a filesystem with FIFOs")
        }
        let fd = open(path, O_RDWR | O_CLOEXEC)
        descriptor = fd
        guard fd >= 0 else {
            let cause = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: directory)
            throw UserError(.environment, "\(path): cannot open the jobserver FIFO: \(cause)")
        }
        self.tokens = tokens
        self.helper = helper
        let bytes = [UInt8](repeating: UInt8(ascii: "+"), count: tokens)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, tokens) }
        let folder = directory
        cleanup = Interruption.onStop {
            try? FileManager.default.removeItem(atPath: folder)
            return nil
        }
    }

    deinit {
        close(descriptor)
        try? FileManager.default.removeItem(atPath: directory)
        Interruption.removeOnStop(cleanup)
    }

    /// Waits for a token and takes it out of the pool.
    func take() async -> UInt8 {
        let descriptor = descriptor
        return await withCheckedContinuation { continuation in
            readers.async {
                var byte: UInt8 = 0
                while true {
                    let n = read(descriptor, &byte, 1)
                    if n == 1 { break }
                    if n < 0 && errno == EINTR { continue }
                    // The FIFO is open read-write here: no end of file, no other error.
                    byte = UInt8(ascii: "+")
                    break
                }
                continuation.resume(returning: byte)
            }
        }
    }

    /// Puts a token back (make returns the byte it took; so does this process).
    func give(_ token: UInt8) {
        var byte = token
        while write(descriptor, &byte, 1) < 0 && errno == EINTR {}
    }

    /// Executes make (`arguments`, looked up in PATH) as a client of the jobserver at
    /// `path`: the FIFO opened on two descriptors it inherits, MAKEFLAGS naming them.
    /// Returns only when that fails, with the reason.
    public static func execute(path: String, tokens: Int, arguments: [String]) -> String {
        guard !arguments.isEmpty else { return "jobserver-exec: no command given" }
        let readEnd = open(path, O_RDWR)
        let writeEnd = open(path, O_RDWR)
        guard readEnd >= 0, writeEnd >= 0 else {
            return "\(path): cannot open the jobserver FIFO: \(String(cString: strerror(errno)))"
        }
        // -j with the pool's size tells make it may run jobs in parallel; the auth names
        // the pool, so make takes its extra jobs from it instead of starting its own.
        setenv("MAKEFLAGS", " -j\(tokens) --jobserver-auth=\(readEnd),\(writeEnd)", 1)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        execvp(arguments[0], argv)
        return "\(arguments[0]): could not be started: \(String(cString: strerror(errno)))"
    }
}
