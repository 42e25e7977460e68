import Foundation
import Subprocess

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// The outcome of one finished process: exit status and everything it printed.
public struct ProcessOutput: Sendable, Equatable {
    public var arguments: [String]
    public var exitStatus: Int32
    public var standardOutput: String
    public var standardError: String

    public init(arguments: [String], exitStatus: Int32, standardOutput: String, standardError: String) {
        self.arguments = arguments
        self.exitStatus = exitStatus
        self.standardOutput = standardOutput
        self.standardError = standardError
    }

    public var succeeded: Bool { exitStatus == 0 }
}

/// Why a process could not be run at all (as opposed to running and failing).
public enum ProcessRunnerError: Error, CustomStringConvertible, Equatable {
    case executableNotFound(String)
    case launchFailed(String, String)
    /// SIGINT or SIGTERM arrived (`Interruption`): the process was not started, or
    /// its outcome is not a result.
    case interrupted(String, Int32)

    public var description: String {
        switch self {
        case .executableNotFound(let name):
            return "\(name): command not found in PATH"
        case .launchFailed(let name, let reason):
            return "\(name): could not be started: \(reason)"
        case .interrupted(let name, let signal):
            return "\(name): stopped by \(signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "signal \(signal)")"
        }
    }
}

/// Runs commands given as argv arrays (never through a shell) and captures
/// their output. Compiler invocations are computed as data elsewhere and only
/// executed here.
public struct ProcessRunner: Sendable {
    /// Upper bound on captured output per stream; compiler diagnostics of a
    /// failing conftest can be long, but not this long.
    public var outputLimit: Int
    public var environment: [String: String]?

    public init(outputLimit: Int = 16 * 1024 * 1024, environment: [String: String]? = nil) {
        self.outputLimit = outputLimit
        self.environment = environment
    }

    /// Runs `arguments[0]` (a path, or a name looked up in PATH) with the rest as its arguments.
    /// With `standardOutputPath`, standard output goes to that file (created or truncated)
    /// instead of being captured: for large outputs.
    public func run(
        _ arguments: [String],
        workingDirectory: String? = nil,
        extraEnvironment: [String: String] = [:],
        standardOutputPath: String? = nil
    ) async throws -> ProcessOutput {
        let (executable, env) = try prepare(arguments, extraEnvironment: extraEnvironment)
        let directory = workingDirectory.map { FilePath($0) }
        try Self.checkInterruption(arguments)
        do {
            let status: TerminationStatus
            let standardOutput: String
            let standardError: String
            if let standardOutputPath {
                let fd = try FileDescriptor.open(FilePath(standardOutputPath), .writeOnly, options: [.create, .truncate],
                                                 permissions: [.ownerReadWrite, .groupRead, .otherRead])
                let result = try await Subprocess.run(
                    executable, arguments: Arguments(Array(arguments.dropFirst())), environment: env, workingDirectory: directory,
                    input: .none, output: .fileDescriptor(fd, closeAfterSpawningProcess: true), error: .string(limit: outputLimit))
                (status, standardOutput, standardError) = (result.terminationStatus, "", result.standardError)
            } else {
                let result = try await Subprocess.run(
                    executable, arguments: Arguments(Array(arguments.dropFirst())), environment: env, workingDirectory: directory,
                    input: .none, output: .string(limit: outputLimit), error: .string(limit: outputLimit))
                (status, standardOutput, standardError) = (result.terminationStatus, result.standardOutput, result.standardError)
            }
            // A process that ended after a signal arrived may have been stopped by it.
            try Self.checkInterruption(arguments)
            return ProcessOutput(arguments: arguments, exitStatus: Self.code(status), standardOutput: standardOutput, standardError: standardError)
        } catch let error as ProcessRunnerError {
            throw error
        } catch {
            try Self.checkInterruption(arguments)
            throw ProcessRunnerError.launchFailed(arguments[0], UserError.describe(error))
        }
    }

    /// Runs a command with standard error merged into standard output (as `2>&1`
    /// would) and hands the bytes to `onOutput` as they arrive, so a caller can
    /// write a log and follow progress while the command runs (make). Standard
    /// input is /dev/null. Returns the exit status, 128 + the signal when killed.
    ///
    /// With `ownProcessGroup` the command leads a process group of its own, registered
    /// with `Interruption`: SIGINT/SIGTERM to nvbuild are sent to the whole group (make
    /// and every compiler it started), which is waited for before nvbuild exits.
    public func stream(
        _ arguments: [String],
        workingDirectory: String? = nil,
        extraEnvironment: [String: String] = [:],
        ownProcessGroup: Bool = false,
        onOutput: ([UInt8]) async -> Void
    ) async throws -> Int32 {
        let (executable, env) = try prepare(arguments, extraEnvironment: extraEnvironment)
        try Self.checkInterruption(arguments)
        var options = PlatformOptions()
        // 0: the child's own pid becomes its group's id (setpgid(0, 0) in posix_spawn).
        if ownProcessGroup { options.processGroupID = 0 }
        let status: TerminationStatus
        do {
            status = try await Subprocess.run(
                executable, arguments: Arguments(Array(arguments.dropFirst())), environment: env,
                workingDirectory: workingDirectory.map { FilePath($0) }, platformOptions: options,
                input: .none, output: .sequence, error: .combinedWithOutput
            ) { execution in
                let group = execution.processIdentifier.value
                if ownProcessGroup { _ = Interruption.track(group: group) }
                defer { if ownProcessGroup { Interruption.untrack(group: group) } }
                for try await chunk in execution.standardOutput {
                    await onOutput(chunk.withUnsafeBytes { Array($0) })
                }
            }.terminationStatus
        } catch {
            try Self.checkInterruption(arguments)
            throw ProcessRunnerError.launchFailed(arguments[0], UserError.describe(error))
        }
        try Self.checkInterruption(arguments)
        return Self.code(status)
    }

    /// Throws once SIGINT/SIGTERM has arrived: nothing is started then, and no outcome reported.
    private static func checkInterruption(_ arguments: [String]) throws {
        if let signal = Interruption.received { throw ProcessRunnerError.interrupted(arguments[0], signal) }
    }

    private static func code(_ status: TerminationStatus) -> Int32 {
        switch status {
        case .exited(let c): return Int32(c)
        case .signaled(let signal): return 128 + Int32(signal)
        }
    }

    /// The executable (checked to exist when named through PATH) and the environment to give it.
    private func prepare(_ arguments: [String], extraEnvironment: [String: String]) throws -> (Executable, Environment) {
        precondition(!arguments.isEmpty, "empty command line")
        let executable: Executable =
            arguments[0].contains("/") ? .path(FilePath(arguments[0])) : .name(arguments[0])
        if !arguments[0].contains("/"), ProcessRunner.lookup(arguments[0], environment: environment) == nil {
            throw ProcessRunnerError.executableNotFound(arguments[0])
        }
        var env: Environment
        if let environment {
            var merged = environment
            for (k, v) in extraEnvironment { merged[k] = v }
            env = .custom(Dictionary(uniqueKeysWithValues: merged.map { (Environment.Key(rawValue: $0.key)!, $0.value) }))
        } else {
            env = .inherit
            if !extraEnvironment.isEmpty {
                env = .inherit.updating(
                    Dictionary(uniqueKeysWithValues: extraEnvironment.map { (Environment.Key(rawValue: $0.key)!, Optional($0.value)) }))
            }
        }
        return (executable, env)
    }

    /// Finds an executable by name in PATH, like the shell would.
    public static func lookup(_ name: String, environment: [String: String]? = nil) -> String? {
        if name.contains("/") {
            return FileManager.default.isExecutableFile(atPath: name) ? name : nil
        }
        let path = (environment ?? ProcessInfo.processInfo.environment)["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
