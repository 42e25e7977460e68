import ArgumentParser
import Foundation
import NVBuildSupport

/// The root command. Subcommands live one per file; this type only lists them.
struct NVBuild: AsyncParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "nvbuild",
        abstract: "Build, package, inspect and verify out-of-tree Linux kernel modules.",
        discussion: """
            Exit status: 0 success; 1 a check, test or verification failed; \
            2 a usage or environment error (missing headers, compiler, unreadable input); \
            130 / 143 stopped by SIGINT / SIGTERM, after every process nvbuild started has stopped.
            """,
        version: version,
        subcommands: [
            KernelsCommand.self,
            ProbeCommand.self,
            BuildCommand.self,
            DKMSCommand.self,
            InspectCommand.self,
            ModulesCommand.self,
        ]
    )
}

@main
enum Main {
    /// The first word of the internal jobserver entry point (never shown in help).
    static let jobserverExec = "jobserver-exec"

    static func main() async {
        // Internal: how `nvbuild build` starts make as a client of its jobserver (see
        // JobSlots.jobserver). Handled before signals are taken over, so make and its
        // compilers keep the default SIGINT/SIGTERM actions it was spawned with.
        let words = Array(CommandLine.arguments.dropFirst())
        if words.first == Self.jobserverExec {
            guard words.count >= 5, words[3] == "--", let tokens = Int(words[2]) else {
                Terminal.error("\(Self.jobserverExec): usage: nvbuild \(Self.jobserverExec) FIFO TOKENS -- COMMAND...; it is nvbuild build's own way to start make")
                exit(2)
            }
            Terminal.error(Jobserver.execute(path: words[1], tokens: tokens, arguments: Array(words[4...])))
            exit(2)
        }
        Interruption.install(
            stopping: { signal in
                Terminal.clearStatus()
                Terminal.note("nvbuild: \(signalName(signal)) received; stopping make and every compiler nvbuild started")
            },
            stopped: { signal, notes in
                for note in notes { Terminal.note(note) }
                Terminal.note("nvbuild: stopped by \(signalName(signal)) (exit \(128 + signal))")
            })
        await runCommand()
        // The handler decides the exit status after an interruption; what the command
        // still reported (a failed row, a table) is not a result.
        if Interruption.received != nil { await Interruption.parkUntilExit() }
        exit(0)
    }

    static func signalName(_ signal: Int32) -> String {
        signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "signal \(signal)"
    }

    /// Runs the command; returns only on success, exits with its status otherwise.
    static func runCommand() async {
        do {
            let (arguments, extraFiles) = InspectCommand.separateFiles(Array(CommandLine.arguments.dropFirst()))
            var command = try NVBuild.parseAsRoot(arguments)
            if var inspect = command as? InspectCommand, !extraFiles.isEmpty {
                inspect.files += extraFiles
                command = inspect
            }
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as UserError {
            if Interruption.received != nil { await Interruption.parkUntilExit() }
            Terminal.error(error.message)
            exit(error.kind == .failed ? 1 : 2)
        } catch let error as ExitCode {
            if Interruption.received != nil { await Interruption.parkUntilExit() }
            exit(error.rawValue)
        } catch where !isArgumentParserError(error) {
            // Whatever a library let through, in the project's words: Foundation's own text
            // (`Error Domain=… UserInfo={…}`) never reaches the user. A file-system error is
            // the environment's (exit 2), anything else a failure. After SIGINT/SIGTERM (a
            // process that reported `interrupted`), the handler decides the exit status.
            if Interruption.received != nil { await Interruption.parkUntilExit() }
            Terminal.error(UserError.describe(error))
            exit(FileSystemError.isFoundation(error) ? 2 : 1)
        } catch {
            if Interruption.received != nil { await Interruption.parkUntilExit() }
            let code = NVBuild.exitCode(for: error)
            let message = NVBuild.fullMessage(for: error)
            if code == .success {
                if !message.isEmpty { print(message) }
                exit(0)
            }
            if !message.isEmpty { FileHandle.standardError.write(Data((message + "\n").utf8)) }
            // ArgumentParser reports usage errors as 64; this tool documents 2.
            exit(code == .validationFailure ? 2 : (code.rawValue == 1 ? 1 : 2))
        }
    }

    /// Parsing, help, validation and completion outcomes, which ArgumentParser itself words.
    static func isArgumentParserError(_ error: any Error) -> Bool {
        String(reflecting: type(of: error)).hasPrefix("ArgumentParser.")
    }
}
