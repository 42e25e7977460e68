import Crypto
import Foundation
import NVBuildSupport

/// A C compiler command as `CC` names it: launchers that wrap the compiler (ccache,
/// distcc), the compiler, and arguments that belong to every compile (`gcc-12 -m32`).
/// Computed as data so commands can be compared before anything runs; the probe, the
/// result cache and Kbuild all take it from here.
public struct CompilerCommand: Sendable, Hashable, CustomStringConvertible {
    /// Wrappers in front of the compiler, each with the words that follow it up to the compiler.
    public var launchers: [String]
    /// The compiler itself (a name looked up in PATH, or a path).
    public var compiler: String
    /// Words after the compiler that every compile gets.
    public var arguments: [String]
    /// Settings the launchers read from the environment (DISTCC_HOSTS, CCACHE_PREFIX):
    /// every process that runs this command gets them.
    public var environment: [String: String] = [:]

    /// Programs that run the compiler named after them instead of being one.
    public static let knownLaunchers: Set<String> = ["ccache", "distcc", "sccache", "icecc", "buildcache"]

    public init(launchers: [String] = [], compiler: String, arguments: [String] = []) {
        self.launchers = launchers
        self.compiler = compiler
        self.arguments = arguments
    }

    /// Parses a `CC`-style command as a shell reads it (quotes and backslashes group
    /// words), so a compiler path with a space stays one word. Nil when it names nothing.
    public init?(parsing text: String) {
        self.init(words: Self.shellWords(text))
    }

    /// Splits argv words into launchers, compiler and arguments: leading words that are
    /// known launchers (and their options, which start with `-`) wrap what follows.
    public init?(words: [String]) {
        var index = 0
        var launchers: [String] = []
        while index < words.count, Self.knownLaunchers.contains(Self.basename(words[index])) {
            launchers.append(words[index])
            index += 1
            while index < words.count, words[index].hasPrefix("-") {
                launchers.append(words[index])
                index += 1
            }
        }
        guard index < words.count else {
            // A launcher alone (`CC=ccache`) is the compiler as far as anything can tell.
            guard let last = launchers.popLast() else { return nil }
            self.init(launchers: launchers, compiler: last)
            return
        }
        self.init(launchers: launchers, compiler: words[index], arguments: Array(words[(index + 1)...]))
    }

    /// The argv prefix of every compile.
    public var argv: [String] { launchers + [compiler] + arguments }

    /// The command with the launchers `launch` asks for in front of the compiler: distcc
    /// (DISTCC_HOSTS set to its hosts), ccache, or both — then ccache first, running
    /// distcc on a miss through CCACHE_PREFIX, as ccache documents for distcc.
    public func launched(_ launch: CompilerLaunch) -> CompilerCommand {
        guard launch.distccHosts != nil || launch.ccache else { return self }
        var result = self
        // The launchers asked for replace the same ones named in CC, with their options.
        let kept = launcherWords(removing: { name in (name == "distcc" && launch.distccHosts != nil) || (name == "ccache" && launch.ccache) })
        if let hosts = launch.distccHosts {
            result.environment["DISTCC_HOSTS"] = hosts
            if launch.ccache {
                result.environment["CCACHE_PREFIX"] = "distcc"
                result.launchers = ["ccache"] + kept
            } else {
                result.launchers = ["distcc"] + kept
            }
        } else {
            result.launchers = ["ccache"] + kept
        }
        return result
    }

    /// Whether compiles of this command go through distcc (named, or as ccache's prefix).
    public var isDistributed: Bool {
        launchers.contains { Self.basename($0) == "distcc" } || environment["CCACHE_PREFIX"] == "distcc"
    }

    /// The command for steps distcc would run on this machine anyway (preprocessing,
    /// dependency listing): distcc and its settings left out, ccache kept.
    public var local: CompilerCommand {
        guard isDistributed else { return self }
        var result = self
        result.launchers = launcherWords(removing: { $0 == "distcc" })
        result.environment["DISTCC_HOSTS"] = nil
        if result.environment["CCACHE_PREFIX"] == "distcc" { result.environment["CCACHE_PREFIX"] = nil }
        return result
    }

    /// Launchers that cache compiler output by its inputs.
    static let cachingLaunchers: Set<String> = ["ccache", "sccache", "buildcache"]

    /// The command without caching launchers (ccache and the like), for compiles no cache
    /// can ever answer: conftest.sh writes each test to a file named after its process
    /// (conftest$$.c), and ccache keys on the source file's name, so it only adds a
    /// preprocessing pass there.
    public var uncached: CompilerCommand {
        var result = self
        let kept = launcherWords(removing: Self.cachingLaunchers.contains)
        result.launchers = kept
        if let prefix = result.environment.removeValue(forKey: "CCACHE_PREFIX"), Self.basename(prefix) == "distcc",
           !kept.contains(where: { Self.basename($0) == "distcc" }) {
            // ccache ran distcc on a miss; without ccache, distcc is the launcher.
            result.launchers = [prefix] + kept
        }
        return result
    }

    /// The launcher words without the launchers whose base name `removed` selects, each
    /// taken out with the options that follow it.
    private func launcherWords(removing removed: (String) -> Bool) -> [String] {
        var kept: [String] = []
        var index = 0
        while index < launchers.count {
            var end = index + 1
            while end < launchers.count, launchers[end].hasPrefix("-") { end += 1 }
            if !removed(Self.basename(launchers[index])) { kept += launchers[index..<end] }
            index = end
        }
        return kept
    }

    /// The command as conftest.sh and make receive it: words joined by spaces (they split it again).
    public var description: String { argv.joined(separator: " ") }

    /// The command as shell text, each word quoted where a shell would split or expand it;
    /// for `make CC=…`, whose recipes hand `$(CC)` to the shell.
    public var shellText: String {
        argv.map { word in
            !word.isEmpty && word.allSatisfy({ $0.isLetter || $0.isNumber || "-_=./+:,@%^".contains($0) })
                ? word : "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
        }.joined(separator: " ")
    }

    /// The compiler's path in PATH, past masquerade directories: a `gcc-12` that is a
    /// symlink to ccache (/usr/lib/ccache) is a launcher, and the real one comes later in PATH.
    public func compilerPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if compiler.contains("/") { return FileManager.default.isExecutableFile(atPath: compiler) ? compiler : nil }
        let directories = (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":").map(String.init)
        for directory in directories where !directory.isEmpty {
            let candidate = directory + "/" + compiler
            guard FileManager.default.isExecutableFile(atPath: candidate) else { continue }
            let resolved = URL(fileURLWithPath: candidate).resolvingSymlinksInPath().lastPathComponent
            if Self.knownLaunchers.contains(resolved) && !Self.knownLaunchers.contains(compiler) { continue }
            return candidate
        }
        return nil
    }

    /// The real compiler's `--version` text, without the program name gcc prints first
    /// (one binary under two names is one compiler). Launchers are never run: identities
    /// built on this (ResultCache.compilerIdentity) make `ccache gcc-12` be `gcc-12`.
    public func versionText(environment: [String: String] = ProcessInfo.processInfo.environment) async throws -> String {
        let output = try await ProcessRunner(environment: environment).run([compilerPath(environment: environment) ?? compiler] + arguments + ["--version"])
        return Self.versionWithoutName(output.standardOutput)
    }

    /// Identifies the real compiler, never a launcher in front of it: the arguments every
    /// compile gets, its version text and its resolved binary's content. What caches of
    /// compiled results (conftest outcomes, the OS-agnostic cores) are keyed by.
    public func identity(environment: [String: String] = ProcessInfo.processInfo.environment) async throws -> String {
        var identity = arguments.joined(separator: "\u{0}") + "\n" + (try await versionText(environment: environment))
        if let path = compilerPath(environment: environment) {
            let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
            if let data = FileManager.default.contents(atPath: resolved) {
                identity += SHA256.hash(data: data).hexString
            }
        }
        return identity
    }

    /// `gcc-12 (Debian 12.2.0-14) 12.2.0` and `x86_64-linux-gnu-gcc-12 (Debian …) …` are one
    /// version: the first word of the first line is how the binary was called.
    public static func versionWithoutName(_ text: String) -> String {
        guard let space = text.firstIndex(of: " "), !text[..<space].contains("\n") else { return text }
        return String(text[space...])
    }

    static func basename(_ word: String) -> String {
        word.split(separator: "/").last.map(String.init) ?? word
    }

    /// POSIX shell word splitting without expansions: blanks separate words, single quotes
    /// keep everything, double quotes keep all but `\"` `\\` `\$` `` \` ``, a backslash
    /// outside quotes keeps the next character. An unterminated quote runs to the end.
    static func shellWords(_ text: String) -> [String] {
        var words: [String] = []
        var current = ""
        var inWord = false
        var chars = text.makeIterator()
        while let c = chars.next() {
            switch c {
            case " ", "\t", "\n":
                if inWord { words.append(current); current = ""; inWord = false }
            case "'":
                inWord = true
                while let q = chars.next(), q != "'" { current.append(q) }
            case "\"":
                inWord = true
                while let q = chars.next(), q != "\"" {
                    if q == "\\", let n = chars.next() {
                        if !"\"\\$`".contains(n) { current.append(q) }
                        current.append(n)
                    } else {
                        current.append(q)
                    }
                }
            case "\\":
                inWord = true
                if let n = chars.next() { current.append(n) }
            default:
                inWord = true
                current.append(c)
            }
        }
        if inWord { words.append(current) }
        return words
    }
}

/// Encoded as its argv (the report's `compiler` field has always been that list).
extension CompilerCommand: Codable {
    public init(from decoder: Decoder) throws {
        let words = try decoder.singleValueContainer().decode([String].self)
        guard let command = CompilerCommand(words: words) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "an empty compiler command"))
        }
        self = command
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(argv)
    }
}

extension KernelTarget {
    /// The compiler the kernel was built with (the first word of CONFIG_CC_VERSION_TEXT),
    /// when it is installed.
    public var installedCompiler: CompilerCommand? {
        guard let compiler, compilerInstalled else { return nil }
        return CompilerCommand(compiler: compiler)
    }

    /// The compiler the driver Makefile would use for conftest: `override` (--cc), else `CC`
    /// from the environment, else the kernel's own compiler when it is installed, else `cc`.
    public func conftestCompiler(override: String?, environment: [String: String]) -> CompilerCommand {
        if let override, let command = CompilerCommand(parsing: override) { return command }
        if let cc = environment["CC"], let command = CompilerCommand(parsing: cc) { return command }
        return installedCompiler ?? CompilerCommand(compiler: "cc")
    }
}

/// How compiles are launched beyond the compiler itself: through distcc to other hosts,
/// through ccache for rebuilds. nvbuild only starts and configures these tools.
public struct CompilerLaunch: Sendable, Hashable {
    /// distcc's host list (DISTCC_HOSTS syntax); nil compiles here.
    public var distccHosts: String?
    public var ccache: Bool

    public init(distccHosts: String? = nil, ccache: Bool = false) {
        self.distccHosts = distccHosts
        self.ccache = ccache
    }

    /// The programs this launch runs, in the order they are checked.
    public var tools: [String] {
        (ccache ? ["ccache"] : []) + (distccHosts != nil ? ["distcc"] : [])
    }

    /// The first tool not found in PATH, with the Debian package that has it.
    public func missingTool(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        tools.first { ProcessRunner.lookup($0, environment: environment) == nil }
    }

    /// How many compiles the hosts take at once, as `distcc -j` reports it; nil without distcc.
    public func distccConcurrency(environment: [String: String] = ProcessInfo.processInfo.environment) async throws -> Int? {
        guard let hosts = distccHosts else { return nil }
        var env = environment
        env["DISTCC_HOSTS"] = hosts
        let output = try await ProcessRunner(environment: env).run(["distcc", "-j"])
        guard output.succeeded, let n = Int(output.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)), n > 0 else {
            let reason = output.standardError.split(separator: "\n").last.map(String.init) ?? "no number printed"
            throw UserError(.environment, "distcc -j with DISTCC_HOSTS='\(hosts)' failed: \(reason); check the host list (man distcc, HOST SPECIFICATIONS)")
        }
        return n
    }
}
