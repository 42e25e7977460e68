import CKmod
import Foundation
import NVBuildSupport
import Synchronization

/// One kernel's module tree as libkmod sees it (`/lib/modules/<release>` or a
/// copy under a depmod-style base directory). Wraps one `kmod_ctx`: use it
/// from one task only, and make one per tree and task.
public final class ModuleTree {
    public let moduleDirectory: String
    public let configDirectories: [String]
    /// What was noticed opening the tree (an optional index missing).
    public let diagnostics: [Diagnostic]
    let context: OpaquePointer
    /// Where libkmod's log lines go; freed after the context.
    private let logTarget: UnsafeMutablePointer<nvb_kmod_log_target>
    let log: LibkmodLog

    /// The default modprobe.d search path of kmod, for callers that want the host's configuration.
    public static let hostConfigDirectories = [
        "/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/lib/modprobe.d",
    ]

    /// `configDirectories` are modprobe.d-style directories or files; none by
    /// default, so the host's modprobe configuration does not leak into a
    /// description of another kernel.
    public init(moduleDirectory: String, configDirectories: [String] = []) throws {
        guard FileManager.default.fileExists(atPath: moduleDirectory + "/modules.dep") else {
            throw UserError(
                .environment,
                "\(moduleDirectory)/modules.dep is missing; install the kernel's image package or run depmod for that release"
            )
        }
        // libkmod maps these without checking them; a corrupt one would crash the process.
        diagnostics = try ModuleIndex.validateTree(moduleDirectory)
        self.moduleDirectory = moduleDirectory
        self.configDirectories = configDirectories
        let duplicated = configDirectories.map { strdup($0) }
        defer { duplicated.forEach { free($0) } }
        var configList: [UnsafePointer<CChar>?] = duplicated.map { UnsafePointer($0) }
        configList.append(nil)
        let ctx = configList.withUnsafeBufferPointer { kmod_new(moduleDirectory, $0.baseAddress) }
        guard let ctx else {
            throw UserError(.environment, "\(moduleDirectory): libkmod could not open this module tree")
        }
        // libkmod logs to stderr by default; a library does not print, so its errors
        // are collected and handed back as diagnostics of the listing they arose in.
        let log = LibkmodLog()
        self.log = log
        logTarget = .allocate(capacity: 1)
        logTarget.initialize(to: nvb_kmod_log_target(sink: libkmodLogSink, context: Unmanaged.passUnretained(log).toOpaque()))
        nvb_kmod_capture_log(ctx, logTarget)
        kmod_set_log_priority(ctx, LOG_ERR)
        _ = kmod_load_resources(ctx)
        context = ctx
    }

    deinit {
        kmod_unref(context)
        logTarget.deallocate()
    }

    /// Actions the dry run reported, in order. `print_action` carries no user
    /// pointer, so the callback can only reach a global; `dryRunTurn`, held for
    /// each whole dry run, keeps concurrent trees from mixing their lines (the
    /// callback takes `collectedActions` itself, so that one cannot be held across).
    static let collectedActions = Mutex<[DependencyListing.Action]>([])
    static let dryRunTurn = Mutex(())
}

/// libkmod's log lines, as they arrive, until a listing takes them.
final class LibkmodLog: Sendable {
    struct Line: Sendable {
        var function: String
        var message: String
    }
    private let lines = Mutex<[Line]>([])

    func append(_ line: Line) { lines.withLock { $0.append(line) } }
    func take() -> [Line] { lines.withLock { lines in defer { lines.removeAll() }; return lines } }
}

/// The log function libkmod calls (through the C shim, which formats the line).
private func libkmodLogSink(
    _ context: UnsafeMutableRawPointer?, _ priority: Int32, _ function: UnsafePointer<CChar>?, _ message: UnsafePointer<CChar>?
) {
    guard let context, let message else { return }
    let log = Unmanaged<LibkmodLog>.fromOpaque(context).takeUnretainedValue()
    var text = String(cString: message)
    while text.last == "\n" { text.removeLast() }
    log.append(.init(function: function.map { String(cString: $0) } ?? "", message: text))
}

/// What `modprobe --show-depends` would print for one argument.
public struct DependencyListing: Sendable, Equatable, Codable {
    public var argument: String
    /// Modules in load order, as libkmod's dry run reported them.
    public var actions: [Action]
    /// Set when the argument matched no module (modprobe's FATAL message, without its
    /// prefix), or when a dependency that modules.dep names is missing.
    public var error: String?
    /// What libkmod reported while listing this argument (modprobe prints these as ERROR:);
    /// one of severity error is also the listing's `error`.
    public var diagnostics: [Diagnostic] = []

    public struct Action: Sendable, Equatable, Codable {
        public enum Kind: String, Sendable, Codable { case insmod, builtin, install }
        public var kind: Kind
        /// Module name (for install: the module the command stands in for).
        public var module: String
        public var path: String?
        public var options: String?
        public var command: String?

        /// The line exactly as modprobe prints it (without the newline).
        public var line: String {
            switch kind {
            case .insmod: return "insmod \(path ?? "") \(options ?? "")"
            case .builtin: return "builtin \(module)"
            case .install: return "install \(command ?? "") \(options ?? "")"
            }
        }
    }

    /// The lines exactly as modprobe prints them.
    public var lines: [String] { actions.map(\.line) }
}
