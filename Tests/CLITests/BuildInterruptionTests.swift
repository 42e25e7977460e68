import Foundation
import Testing

/// SIGTERM or SIGINT sent to `nvbuild build` alone, mid-compile: make and every compiler
/// it started stop with it, the exit status is 128 + the signal, and the build folder
/// holds no .ko and is marked incomplete.
@Suite(.serialized) struct BuildInterruptionTests {
    /// Processes whose command line or working directory mention `path` (read from /proc).
    static func processes(mentioning path: String) -> [(pid: pid_t, command: String)] {
        let me = getpid()
        var found: [(pid_t, String)] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(name), pid != me else { continue }
            let raw = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(name)/cmdline"))) ?? Data()
            let command = String(decoding: raw.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
            let cwd = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(name)/cwd")) ?? ""
            // The state follows the last ')' of "pid (comm) S ...": zombies are not running.
            let stat = (try? String(contentsOfFile: "/proc/\(name)/stat", encoding: .utf8)) ?? ""
            let state = stat.lastIndex(of: ")").map { String(stat[stat.index(after: $0)...].dropFirst().prefix(1)) } ?? "?"
            if state != "Z", command.contains(path) || cwd.hasPrefix(path) { found.append((pid, command)) }
        }
        return found
    }

    /// A plain module of two objects that each keep gcc busy for several seconds at -O2:
    /// a long chain of dependent statements in one function.
    static func makeSlowTree(_ tree: String) throws {
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        try "obj-m += nvbuild_slow.o\nnvbuild_slow-y := slow_a.o slow_b.o\n".write(toFile: tree + "/Kbuild", atomically: false, encoding: .utf8)
        for part in ["a", "b"] {
            try """
                #include <linux/module.h>
                #define S v = v * 31 + (v >> 3);
                #define A S S S S S S S S S S
                #define B A A A A A A A A A A
                #define C B B B B B B B B B B
                #define D C C C C C C C C C C
                int nvbuild_slow_\(part)(int v);
                int nvbuild_slow_\(part)(int v) { D D return v; }
                \(part == "a" ? "MODULE_LICENSE(\"GPL\");" : "")

                """.write(toFile: "\(tree)/slow_\(part).c", atomically: false, encoding: .utf8)
        }
    }

    @Test(arguments: [SIGTERM, SIGINT])
    func signalToNvbuildAloneStopsMakeAndEveryCompiler(signal: Int32) throws {
        let kernel = try CLI.standardKernel("6.12.")
        let root = CLI.temporaryDirectory()
        let build = root + "/build"
        defer {
            // Whatever the outcome, nothing of this test keeps running.
            for p in Self.processes(mentioning: root) { kill(p.pid, SIGKILL) }
            try? FileManager.default.removeItem(atPath: root)
        }
        try Self.makeSlowTree(root + "/tree")
        #expect(FileManager.default.createFile(atPath: root + "/stderr", contents: nil))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = ["build", "--tree", root + "/tree", "--kernel", kernel, "--build-dir", build, "--jobs", "2"]
        var env = ProcessInfo.processInfo.environment
        env["NO_COLOR"] = "1"
        env.removeValue(forKey: "CC")
        process.environment = env
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: root + "/stderr")
        try process.run()

        // Mid-compile: a compiler proper (cc1) is working on a file of the build folder.
        let started = Date()
        var compiling = false
        while Date().timeIntervalSince(started) < 120, process.isRunning {
            if Self.processes(mentioning: build).contains(where: { $0.command.contains("/cc1 ") }) {
                compiling = true
                break
            }
            usleep(100_000)
        }
        try #require(compiling, "no compiler started within 120 s")
        #expect(kill(process.processIdentifier, signal) == 0)
        let sent = Date()
        while process.isRunning, Date().timeIntervalSince(sent) < 30 { usleep(50_000) }
        #expect(!process.isRunning, "nvbuild still runs 30 s after the signal")
        Thread.sleep(forTimeInterval: 2)

        let survivors = Self.processes(mentioning: build)
        #expect(survivors.isEmpty, "still running 2 s after nvbuild exited: \(survivors.map { "\($0.pid) \($0.command.prefix(120))" })")
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 128 + signal)
        let stderr = (try? String(contentsOfFile: root + "/stderr", encoding: .utf8)) ?? ""
        #expect(stderr.contains("stopped by \(signal == SIGTERM ? "SIGTERM" : "SIGINT") (exit \(128 + signal))"), "\(stderr)")
        #expect(!stderr.contains("FAILED") && !stderr.contains("built for"), "an interrupted build reported a row: \(stderr)")
        // No module from the interrupted build, and the folder says it is incomplete.
        let files = (FileManager.default.subpaths(atPath: build) ?? [])
        #expect(!files.contains { $0.hasSuffix(".ko") }, "\(files.filter { $0.hasSuffix(".ko") })")
        #expect(FileManager.default.fileExists(atPath: "\(build)/\(kernel)/INCOMPLETE"))
    }
}

/// The probe's compilers run in nvbuild's own process group (so a supervisor's group
/// signal reaches them directly); a signal to nvbuild alone stops them too.
@Suite struct ProbeInterruptionTests {
    static func processGroup(of pid: pid_t) -> pid_t? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 2 ? pid_t(fields[2]) : nil
    }

    @Test func sigtermToNvbuildAloneStopsTheProbesCompilers() throws {
        let kernel = try CLI.standardKernel("6.12.")
        let output = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: output) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = ["probe", "--quiet", "--tree", CLI.fixture, "--kernel", kernel, "--no-cache", "--output", output]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let scratch = NSTemporaryDirectory() + "nvbuild-probe-\(process.processIdentifier)-"
        defer { for p in BuildInterruptionTests.processes(mentioning: scratch) { kill(p.pid, SIGKILL) } }
        var compilers: [pid_t] = []
        let started = Date()
        while compilers.isEmpty, process.isRunning, Date().timeIntervalSince(started) < 60 {
            compilers = BuildInterruptionTests.processes(mentioning: scratch).map(\.pid)
            if compilers.isEmpty { usleep(20_000) }
        }
        try #require(!compilers.isEmpty, "the probe started no compiler within 60 s")
        let group = Self.processGroup(of: process.processIdentifier)
        #expect(compilers.contains { Self.processGroup(of: $0) == group }, "the probe's compilers are not in nvbuild's process group")
        #expect(kill(process.processIdentifier, SIGTERM) == 0)
        let sent = Date()
        while process.isRunning, Date().timeIntervalSince(sent) < 30 { usleep(50_000) }
        #expect(!process.isRunning)
        Thread.sleep(forTimeInterval: 2)
        let survivors = BuildInterruptionTests.processes(mentioning: scratch)
        #expect(survivors.isEmpty, "\(survivors.map { "\($0.pid) \($0.command.prefix(120))" })")
        #expect(process.terminationStatus == 143)
        // The scratch folder went with it; no header was left half-written.
        let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory())) ?? [])
            .filter { $0.hasPrefix("nvbuild-probe-\(process.processIdentifier)-") }
        #expect(leftovers.isEmpty, "\(leftovers)")
        for header in (try? FileManager.default.contentsOfDirectory(atPath: output)) ?? [] where header.hasSuffix(".h") {
            let text = (try? String(contentsOfFile: "\(output)/\(header)", encoding: .utf8)) ?? ""
            #expect(text.hasSuffix("\"\(kernel)\"\n"), "\(header) is partial")
        }
    }
}
