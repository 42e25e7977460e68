import Foundation
import Testing

/// Several kernels at once under one --jobs budget: both kernels' makes run at the same
/// time, and nvbuild's descendants (makes' compilers and the probes') never run more
/// compilers than --jobs.
@Suite struct ConcurrentBuildTests {
    struct Sample {
        var compilers = 0
        var makesFor: Set<String> = []
    }

    /// nvbuild's descendants now: compilers proper (cc1), and the build folders that have a make running.
    static func sample(root pid: pid_t, buildDirectory: String) -> Sample {
        var parent: [pid_t: pid_t] = [:]
        var command: [pid_t: String] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let p = pid_t(name), let stat = try? String(contentsOfFile: "/proc/\(name)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, fields[0] != "Z", let pp = pid_t(fields[1]) else { continue }
            parent[p] = pp
            let raw = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(name)/cmdline"))) ?? Data()
            command[p] = String(decoding: raw.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
        }
        var sample = Sample()
        for (p, text) in command {
            var q = parent[p] ?? 1
            var descends = false
            while q > 1 {
                if q == pid { descends = true; break }
                q = parent[q] ?? 1
            }
            guard descends else { continue }
            let program = text.split(separator: " ").first.map { String($0.split(separator: "/").last ?? "") } ?? ""
            if program == "cc1" { sample.compilers += 1 }
            if program == "make", let m = text.range(of: "M=" + buildDirectory + "/") {
                sample.makesFor.insert(String(text[m.upperBound...].prefix { $0 != "/" }))
            }
        }
        return sample
    }

    @Test func twoKernelsBuildAtOnceWithinTheJobBudget() throws {
        let kernels = [try CLI.standardKernel("6.1."), try CLI.standardKernel("6.12.")]
        let root = CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.fixture, toPath: root + "/tree")
        let build = root + "/build"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = ["build", "--tree", root + "/tree", "--build-dir", build, "--jobs", "2", "--json", "--no-cache"]
            + kernels.flatMap { ["--kernel", $0] }
        var env = ProcessInfo.processInfo.environment
        for k in ["CC", "DISTCC_HOSTS"] { env.removeValue(forKey: k) }
        process.environment = env
        #expect(FileManager.default.createFile(atPath: root + "/out.json", contents: nil))
        process.standardOutput = FileHandle(forWritingAtPath: root + "/out.json")
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        var most = 0
        var together = false
        let started = Date()
        while process.isRunning, Date().timeIntervalSince(started) < 600 {
            let now = Self.sample(root: process.processIdentifier, buildDirectory: build)
            most = max(most, now.compilers)
            if now.makesFor.count > 1 { together = true }
            usleep(30_000)
        }
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let rows = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: root + "/out.json"))) as? [[String: Any]] ?? []
        #expect(rows.map { $0["release"] as? String ?? "" } == kernels, "rows keep the order asked for")
        #expect(rows.allSatisfy { $0["succeeded"] as? Bool == true })
        #expect(most <= 2, "\(most) compilers ran at once under --jobs 2")
        #expect(most >= 1)
        #expect(together, "the two kernels' makes never ran at the same time")
        for kernel in kernels {
            let log = (try? String(contentsOfFile: "\(build)/\(kernel)/build.log", encoding: .utf8)) ?? ""
            // make got no -j of its own: it takes its jobs from nvbuild's jobserver.
            #expect(log.hasPrefix("# make -k ") && !log.split(separator: "\n")[0].contains(" -j"), "\(log.prefix(300))")
            #expect(log.contains("jobserver"))
        }
    }
}
