import Foundation
import KernelTree
import NVBuildSupport

/// Runs conftest compiles, each in its own private directory, never through a
/// shell, keeping every diagnostic.
public struct CompileRunner: Sendable {
    /// The command of compile probes (distcc, when asked for, distributes them).
    public var compiler: CompilerCommand
    /// The command of steps that run here whatever the launchers: preprocessing and
    /// header presence (distcc preprocesses locally and would only add a round trip).
    public var localCompiler: CompilerCommand
    public var flags: [String]
    public var runner: ProcessRunner
    /// A private scratch directory this run owns (removed by the caller).
    public var scratch: String
    /// The tree's conftest.sh NVIDIA_OOT_PATH: its include folder joins header presence.
    public var outOfTreeDirectory: String?
    /// How many compiler processes this runner started (for reports and benchmarks).
    let runs = Counter()
    /// When set, every compile and preprocess waits for one of these slots.
    var slots: JobSlots?
    /// Jobs on the critical path (union rounds) are served before the others.
    var urgent = false

    public init(compiler: CompilerCommand, flags: [String], scratch: String, runner: ProcessRunner = ProcessRunner()) {
        self.compiler = compiler
        self.localCompiler = compiler.local
        self.flags = flags
        self.scratch = scratch
        self.runner = runner
    }

    /// The exact command line of a compile in `directory` (the private dir is
    /// on the include path so auxiliary files resolve like conftest.sh's).
    public func compileCommand(directory: String) -> [String] {
        compiler.argv + flags + ["-I\(directory)", "-MD", "-MF", "conftest.d", "-c", sourceName, "-o", "conftest.o"]
    }

    /// The probe source's file name: conftest.c, as conftest.sh names it, except through
    /// distcc, which compiles every `conftest.*` on this machine (it takes it for an
    /// autoconf test). Diagnostics name conftest.c either way (`compile`).
    public var sourceName: String { compiler.isDistributed ? Self.distributedSourceName : "conftest.c" }
    static let distributedSourceName = "nvbuild-probe.c"


    public func compile(id: String, source: String, files: [TestDefinition.AuxiliaryFile]) async throws -> (compiled: Bool, diagnostics: String, command: [String], dependencies: [String]) {
        let directory = "\(scratch)/\(id)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data(source.utf8).write(to: URL(fileURLWithPath: directory + "/" + sourceName))
        for file in files {
            try Data(file.content.utf8).write(to: URL(fileURLWithPath: directory + "/" + file.name))
        }
        let command = compileCommand(directory: directory)
        let environment = compiler.environment
        let output = try await limited { try await runner.run(command, workingDirectory: directory, extraEnvironment: environment) }
        let compiled = output.succeeded && FileManager.default.fileExists(atPath: directory + "/conftest.o")
        let rule = (try? String(contentsOfFile: directory + "/conftest.d", encoding: .utf8)) ?? ""
        let dependencies = ResultCache.dependencies(fromMakeRule: rule, directory: directory)
        return (compiled, compiler.isDistributed ? Self.asLocal(output.standardError) : output.standardError, command, dependencies)
    }

    /// The preprocessor output of a source as analysis needs it: include directives
    /// (-dI) and macro definitions (-dD) kept in place. Nil when the preprocessor wrote nothing.
    func preprocess(id: String, source: String) async throws -> [UInt8]? {
        let directory = "\(scratch)/\(id)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data(source.utf8).write(to: URL(fileURLWithPath: directory + "/conftest.c"))
        // Standard output to a file: gcc deletes an -o file when probe code has errors (a macro
        // given the wrong arguments), yet the output is complete and those probes fail in the
        // compile too.
        let command = localCompiler.argv + flags + ["-I\(directory)", "-E", "-dI", "-dD", "conftest.c"]
        let output = directory + "/conftest.i"
        let environment = localCompiler.environment
        _ = try await limited { try await runner.run(command, workingDirectory: directory, extraEnvironment: environment, standardOutputPath: output) }
        guard let data = FileManager.default.contents(atPath: output), !data.isEmpty else { return nil }
        return [UInt8](data)
    }

    private func limited(_ job: @Sendable () async throws -> ProcessOutput) async throws -> ProcessOutput {
        _ = runs.increment()
        return try await slotted(job)
    }

    /// Holds a job slot while `job` runs, when there are slots.
    private func slotted(_ job: @Sendable () async throws -> ProcessOutput) async throws -> ProcessOutput {
        guard let slots else { return try await job() }
        return try await slots.run(urgent: urgent, job)
    }

    /// A distributed compile's messages as the local compile prints them: without distcc's
    /// own lines (`distcc[pid] ERROR: compile … failed`), the source named conftest.c.
    static func asLocal(_ text: String) -> String {
        var text = text.replacingOccurrences(of: distributedSourceName, with: "conftest.c")
        guard text.contains("distcc[") else { return text }
        text = text.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.hasPrefix("distcc[") }.joined(separator: "\n")
        return text
    }

    /// test_kernel_header for many headers at once, deciding what it can without one run
    /// per header: a header found in no include directory is absent (-E -M fails on it and
    /// -MG succeeds); headers that exist are preprocessed together, and when that succeeds
    /// no missing file stops any of them, so each one alone passes -E -M or fails for a
    /// reason -MG does not excuse either: present. Returns the decided headers by index;
    /// the caller runs `headerPresent` for the rest.
    public func headersPresent(_ headers: [String], cache: ResultCache? = nil, identity: String = "") async throws -> [Int: Bool] {
        let extra = outOfTreeIncludes()
        let searched = Self.includeDirectories(extra + flags)
        var decided: [Int: Bool] = [:]
        var existing: [Int] = []
        for (i, header) in headers.enumerated() {
            if let cache, let hit = cache.lookup(step: headerKey(header, identity: identity, extra: extra)) {
                decided[i] = hit.ok
            } else if Self.directory(holding: header, in: searched) != nil {
                existing.append(i)
            } else {
                decided[i] = false
                cache?.store(step: headerKey(header, identity: identity, extra: extra), ok: false, output: "", dependencies: [],
                             absent: searched.map { $0 + "/" + header })
            }
        }
        guard existing.count > 1 else { return decided }
        let directory = "\(scratch)/headers-together"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let text = existing.map { "#include <\(headers[$0])>\n" }.joined()
        try Data(text.utf8).write(to: URL(fileURLWithPath: directory + "/presence.c"))
        // -MG lists missing files instead of stopping at them; other errors (a header that
        // does not preprocess on its own) do not matter: such a header is present too.
        let command = localCompiler.argv + ["-E", "-M", "-MG"] + extra + flags + ["presence.c"]
        let environment = localCompiler.environment
        let output = try await limited { try await runner.run(command, workingDirectory: directory, extraEnvironment: environment) }
        guard let entries = ResultCache.prerequisites(ofMakeRule: output.standardOutput), !entries.isEmpty,
              entries.allSatisfy({ $0.hasPrefix("/") || $0 == "presence.c" }) else { return decided }
        let deps = entries.filter { $0.hasPrefix("/") }
        for i in existing {
            decided[i] = true
            cache?.store(step: headerKey(headers[i], identity: identity, extra: extra), ok: true, output: "", dependencies: deps)
        }
        return decided
    }

    /// conftest.sh passes `-I$NVIDIA_OOT_PATH/include` whether or not it exists; the
    /// compiler ignores a missing folder, so only an existing one changes a result or a key.
    private func outOfTreeIncludes() -> [String] {
        guard let outOfTreeDirectory, FileManager.default.fileExists(atPath: outOfTreeDirectory + "/include") else { return [] }
        return ["-I\(outOfTreeDirectory)/include"]
    }

    private func headerKey(_ header: String, identity: String, extra: [String]) -> String {
        (["header", identity, header] + extra + flags).joined(separator: "\u{0}")
    }

    /// test_kernel_header: preprocess `#include <header>` with -E -M; on failure retry with -MG,
    /// where success means the header is missing and failure means it exists but does not
    /// preprocess on its own (still reported present). Cached with the files it read, or, for
    /// a missing header, with the places it was looked for.
    public func headerPresent(_ header: String, index: Int, cache: ResultCache? = nil, identity: String = "") async throws -> (present: Bool, diagnostics: String) {
        let extra = outOfTreeIncludes()
        let key = headerKey(header, identity: identity, extra: extra)
        if let cache, let hit = cache.lookup(step: key) { return (hit.ok, hit.output) }

        let directory = "\(scratch)/header-\(index)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data("#include <\(header)>\n".utf8).write(to: URL(fileURLWithPath: directory + "/presence.c"))
        let base = localCompiler.argv + ["-E", "-M"] + extra + flags
        let runner = runner, environment = localCompiler.environment
        let first = try await slotted { try await runner.run(base + ["presence.c"], workingDirectory: directory, extraEnvironment: environment) }
        if first.succeeded {
            let deps = ResultCache.dependencies(fromMakeRule: first.standardOutput, directory: directory)
            cache?.store(step: key, ok: true, output: first.standardError, dependencies: deps)
            return (true, first.standardError)
        }
        // -H lists every header opened, also when the run fails: the inputs of that verdict.
        let second = try await slotted { try await runner.run(base + ["-MG", "-H", "presence.c"], workingDirectory: directory, extraEnvironment: environment) }
        if !second.succeeded {
            let opened = second.standardError.split(separator: "\n").compactMap { line -> String? in
                guard line.hasPrefix("."), let space = line.firstIndex(of: " ") else { return nil }
                let path = String(line[line.index(after: space)...])
                return path.hasPrefix("/") ? path : nil
            }
            if !opened.isEmpty {
                cache?.store(step: key, ok: true, output: first.standardError, dependencies: opened)
            }
        }
        if second.succeeded {
            let deps = ResultCache.dependencies(fromMakeRule: second.standardOutput, directory: directory)
            let searched = Self.includeDirectories(extra + flags).map { $0 + "/" + header }
            cache?.store(step: key, ok: false, output: first.standardError, dependencies: deps, absent: searched)
        }
        return (!second.succeeded, first.standardError)
    }

    /// The first of `directories` that holds `name` (a header as `#include <name>` spells it).
    static func directory(holding name: String, in directories: [String]) -> String? {
        directories.first { FileManager.default.fileExists(atPath: $0 + "/" + name) }
    }

    /// Directories named by -I / -isystem / -iquote / -idirafter, in the order given.
    static func includeDirectories(_ flags: [String]) -> [String] {
        directories(flags).map(\.directory)
    }

    /// Where `#include <x>` looks, in gcc's order: -I, then -isystem, then -idirafter
    /// (kernel flags have -nostdinc: no default directories).
    static func bracketSearchOrder(_ flags: [String]) -> [String] {
        let named = directories(flags)
        return ["-I", "-isystem", "-idirafter"].flatMap { option in named.filter { $0.option == option }.map(\.directory) }
    }

    /// Directories named by -isystem (the compiler's own headers, for kernel builds).
    static func systemIncludeDirectories(_ flags: [String]) -> [String] {
        directories(flags).filter { $0.option == "-isystem" }.map(\.directory)
    }

    private static func directories(_ flags: [String]) -> [(option: String, directory: String)] {
        var dirs: [(option: String, directory: String)] = []
        var i = 0
        while i < flags.count {
            let f = flags[i]
            for option in ["-isystem", "-iquote", "-idirafter", "-I"] where f.hasPrefix(option) {
                if f == option, i + 1 < flags.count {
                    dirs.append((option, flags[i + 1]))
                    i += 1
                } else if f.count > option.count {
                    dirs.append((option, String(f.dropFirst(option.count))))
                }
                break
            }
            i += 1
        }
        return dirs
    }

    /// The kernel's UTS_RELEASE as the preprocessor expands it.
    public func utsRelease(cache: ResultCache? = nil, identity: String = "") async throws -> String {
        let key = (["uts", identity] + flags).joined(separator: "\u{0}")
        if let cache, let hit = cache.lookup(step: key), hit.ok { return hit.output }
        let directory = "\(scratch)/uts"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data("#include <generated/utsrelease.h>\nUTS_RELEASE\n".utf8).write(to: URL(fileURLWithPath: directory + "/uts.c"))
        let command = localCompiler.argv + ["-E", "-P", "-MD", "-MF", "uts.d"] + flags + ["uts.c", "-o", "uts.i"]
        let runner = runner, environment = localCompiler.environment
        let output = try await slotted { try await runner.run(command, workingDirectory: directory, extraEnvironment: environment) }
        let text = (try? String(contentsOfFile: directory + "/uts.i", encoding: .utf8)) ?? ""
        let value = text.split(separator: "\n").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        if output.succeeded, let rule = try? String(contentsOfFile: directory + "/uts.d", encoding: .utf8) {
            let deps = ResultCache.dependencies(fromMakeRule: rule, directory: directory)
            cache?.store(step: key, ok: true, output: value, dependencies: deps)
        }
        return value
    }
}

/// Runs async work over a collection with at most `limit` tasks at once, keeping input order.
func concurrentMap<T: Sendable, R: Sendable>(_ items: [T], limit: Int, _ body: @escaping @Sendable (T) async throws -> R) async throws -> [R] {
    try await withThrowingTaskGroup(of: (Int, R).self) { group in
        var results = [R?](repeating: nil, count: items.count)
        var next = 0
        for _ in 0..<min(max(limit, 1), items.count) {
            let i = next
            group.addTask { (i, try await body(items[i])) }
            next += 1
        }
        while let (i, r) = try await group.next() {
            results[i] = r
            if next < items.count {
                let j = next
                group.addTask { (j, try await body(items[j])) }
                next += 1
            }
        }
        return results.map { $0! }
    }
}
