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
    let context: OpaquePointer

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
        // libkmod logs to stderr by default; a library stays quiet.
        kmod_set_log_priority(ctx, 0)
        _ = kmod_load_resources(ctx)
        context = ctx
    }

    deinit {
        kmod_unref(context)
    }

    /// Actions the dry run reported, in order. `print_action` carries no user
    /// pointer, so the callback can only reach a global; `dryRunTurn`, held for
    /// each whole dry run, keeps concurrent trees from mixing their lines (the
    /// callback takes `collectedActions` itself, so that one cannot be held across).
    static let collectedActions = Mutex<[DependencyListing.Action]>([])
    static let dryRunTurn = Mutex(())
}

/// What `modprobe --show-depends` would print for one argument.
public struct DependencyListing: Sendable, Equatable, Codable {
    public var argument: String
    /// Modules in load order, as libkmod's dry run reported them.
    public var actions: [Action]
    /// Set when the argument matched no module (modprobe's FATAL message, without its prefix).
    public var error: String?

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
