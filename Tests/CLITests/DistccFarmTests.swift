import Foundation
import ModuleELF
import NVBuildSupport
import Testing

/// Two build hosts on this machine: a network namespace each, joined to the test by a
/// veth pair on a /24 of its own, each running Debian's real distccd that allows only
/// that subnet and logs to a file of the test. Everything is removed by `tearDown`.
final class DistccFarm {
    struct Host {
        var namespace: String
        var outsideInterface: String
        var address: String
        var subnet: String
        var log: String
        var pidFile: String
    }

    let root: String
    private(set) var hosts: [Host] = []

    /// Why the farm cannot be made here (the test is then skipped, saying so), or nil.
    static let unavailable: String? = {
        guard getuid() == 0 else { return "the distcc farm test needs root (ip netns add); run it as root, as CI does" }
        guard let ip = ProcessRunner.lookup("ip") ?? ["/usr/sbin/ip", "/sbin/ip"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            return "ip (iproute2) is not installed; scripts/setup installs it"
        }
        // A namespace made and removed at once: `ip netns` works here (a container may forbid it).
        let probe = "nvbprobe\(getpid())"
        let made = DistccFarm.shell([ip, "netns", "add", probe])
        _ = DistccFarm.shell([ip, "netns", "del", probe])
        guard made.status == 0 else { return "ip netns is unavailable here: \(made.output.split(separator: "\n").first ?? "")" }
        return nil
    }()

    static var ip: String { ProcessRunner.lookup("ip") ?? "/usr/sbin/ip" }

    /// Runs a command to its end; status and both streams together. Spawned and waited for
    /// directly: distccd --daemon leaves a child holding whatever descriptors it was given,
    /// so the output goes to a file, and the process is reaped with waitpid.
    @discardableResult
    static func shell(_ arguments: [String]) -> (status: Int32, output: String) {
        let output = FileManager.default.temporaryDirectory.path + "/nvbuild-farm-\(UUID().uuidString).out"
        defer { try? FileManager.default.removeItem(atPath: output) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let program = arguments[0].contains("/") ? arguments[0] : (ProcessRunner.lookup(arguments[0]) ?? arguments[0])
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, program, &actions, nil, &argv, environ)
        guard spawned == 0 else { return (127, "\(program): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (code, (try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
    }

    init(root: String) {
        self.root = root
    }

    /// Subnets 10.213.N.0/24 that no address or route of this machine uses.
    static func freeSubnets(_ count: Int) -> [Int] {
        let inUse = shell([ip, "-4", "-o", "addr", "show"]).output + shell([ip, "-4", "route", "show", "table", "all"]).output
        return Array((40..<250).filter { !inUse.contains("10.213.\($0).") }.prefix(count))
    }

    /// Makes the hosts and starts distccd in each; throws with the failing command's output.
    func start(hosts count: Int) throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o777])
        let tag = String(getpid() % 100_000)
        for (i, n) in Self.freeSubnets(count).enumerated() {
            let letter = String(UnicodeScalar(UInt8(ascii: "a") + UInt8(i)))
            let host = Host(
                namespace: "nvbdcc\(tag)\(letter)", outsideInterface: "nvd\(tag)\(letter)h", address: "10.213.\(n).2",
                subnet: "10.213.\(n).0/24", log: "\(root)/distccd-\(letter).log", pidFile: "\(root)/distccd-\(letter).pid")
            hosts.append(host)
            let inside = "nvd\(tag)\(letter)n"
            let ip = Self.ip
            for command in [
                [ip, "netns", "add", host.namespace],
                [ip, "-n", host.namespace, "link", "set", "lo", "up"],
                [ip, "link", "add", host.outsideInterface, "type", "veth", "peer", "name", inside],
                [ip, "link", "set", inside, "netns", host.namespace],
                [ip, "addr", "add", "10.213.\(n).1/24", "dev", host.outsideInterface],
                [ip, "link", "set", host.outsideInterface, "up"],
                [ip, "-n", host.namespace, "addr", "add", "\(host.address)/24", "dev", inside],
                [ip, "-n", host.namespace, "link", "set", inside, "up"],
            ] {
                let r = Self.shell(command)
                guard r.status == 0 else { throw FarmError(description: "\(command.joined(separator: " ")): \(r.output)") }
            }
            // distccd drops root for its own user: the log must be writable by it.
            _ = FileManager.default.createFile(atPath: host.log, contents: nil, attributes: [.posixPermissions: 0o666])
            let daemon = Self.shell([
                ip, "netns", "exec", host.namespace, "distccd", "--daemon", "--allow", host.subnet, "--listen", host.address,
                "--jobs", "2", "--log-file", host.log, "--log-level", "info", "--pid-file", host.pidFile,
            ])
            guard daemon.status == 0 else { throw FarmError(description: "distccd in \(host.namespace): \(daemon.output)") }
        }
        guard hosts.count == count else { throw FarmError(description: "no free 10.213.N.0/24 subnet for \(count) hosts") }
        // Listening before the first client connects.
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, !hosts.allSatisfy({ (try? String(contentsOfFile: $0.log, encoding: .utf8))?.contains("listening on") == true }) {
            usleep(100_000)
        }
    }

    /// distcc's host list: each host with 2 slots.
    var distccHosts: String { hosts.map { "\($0.address)/2" }.joined(separator: " ") }

    /// Every process in the host's namespace (distccd and the compilers it started).
    func processes(of host: Host) -> [pid_t] {
        Self.shell([Self.ip, "netns", "pids", host.namespace]).output.split(separator: "\n").compactMap { pid_t($0) }
    }

    /// Kills every process of the host: distccd goes away as a crashed machine would.
    func kill(_ host: Host) {
        for pid in processes(of: host) { Foundation.kill(pid, SIGKILL) }
    }

    /// Compile jobs distccd finished, as its log reports them.
    func jobs(of host: Host) -> [String] {
        ((try? String(contentsOfFile: host.log, encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.contains("COMPILE_OK") }.map(String.init)
    }

    func tearDown() {
        for host in hosts {
            kill(host)
            Self.shell([Self.ip, "netns", "del", host.namespace])
            // Gone with the namespace; removed here too in case the namespace was never made.
            Self.shell([Self.ip, "link", "del", host.outsideInterface])
        }
        try? FileManager.default.removeItem(atPath: root)
    }

    struct FarmError: Error, CustomStringConvertible {
        var description: String
    }
}

/// `nvbuild build --distcc` through two real distccd hosts (network namespaces): the
/// compiles reach both, the modules equal a local build's, and a host that dies mid-build
/// costs nothing but time (distcc compiles here instead; the row notes it).
@Suite(.serialized, .enabled(if: DistccFarm.unavailable == nil, Comment(rawValue: DistccFarm.unavailable ?? "")))
struct DistccFarmTests {
    /// The sections whose bytes a distributed compile must reproduce, and the module's
    /// .modinfo, of every .ko under `directory` by relative path.
    static func facts(under directory: String) throws -> [String: (modinfo: [String], sections: [String: Data])] {
        var result: [String: (modinfo: [String], sections: [String: Data])] = [:]
        for path in FileManager.default.subpaths(atPath: directory) ?? [] where path.hasSuffix(".ko") {
            let full = directory + "/" + path
            let module = try ModuleFile.read(path: full)
            let bytes = try Data(contentsOf: URL(fileURLWithPath: full))
            var sections: [String: Data] = [:]
            for s in module.sections where s.name == ".text" || s.name == ".data" {
                sections[s.name] = bytes.subdata(in: Int(s.offset)..<Int(s.offset + s.size))
            }
            result[path] = (module.modinfo.map { "\($0.key)=\($0.value)" }, sections)
        }
        return result
    }

    @Test func buildThroughTwoDistccHostsMatchesALocalBuildAndSurvivesAHostKilledMidBuild() async throws {
        let kernels = [try CLI.standardKernel("6.1."), try CLI.standardKernel("6.12.")]
        try #require(ProcessRunner.lookup("distccd") != nil && ProcessRunner.lookup("distcc") != nil, "distcc is not installed; scripts/setup installs it")
        let root = CLI.temporaryDirectory()
        let farm = DistccFarm(root: root + "/farm")
        defer { farm.tearDown() }
        try farm.start(hosts: 2)
        let tree = root + "/tree"
        try FileManager.default.copyItem(atPath: CLI.fixture, toPath: tree)
        // distcc's own state (locks, which host failed) stays with this test.
        let distccState = root + "/distcc-state"
        try FileManager.default.createDirectory(atPath: distccState, withIntermediateDirectories: true)
        let environment = ["DISTCC_DIR": distccState]

        let kernelArguments = kernels.flatMap { ["--kernel", $0] }
        let local = try CLI.run(["build", "--tree", tree, "--build-dir", root + "/local", "--jobs", "2", "--json"] + kernelArguments)
        #expect(local.status == 0, "\(local.stderr)")
        // The probe too goes through the hosts: no cached results.
        let remote = try CLI.run(["build", "--tree", tree, "--build-dir", root + "/remote", "--jobs", "2", "--json", "--no-cache",
                                  "--distcc", farm.distccHosts] + kernelArguments, environment: environment)
        #expect(remote.status == 0, "\(remote.stderr)")
        for host in farm.hosts {
            let jobs = farm.jobs(of: host)
            #expect(!jobs.isEmpty, "distccd on \(host.address) ran no compile job: \((try? String(contentsOfFile: host.log, encoding: .utf8)) ?? "")")
            // Kbuild's compiles, not only the probe's.
            #expect(jobs.contains { $0.contains(root + "/remote/") }, "no Kbuild compile on \(host.address)")
        }
        for kernel in kernels {
            let mine = try Self.facts(under: "\(root)/local/\(kernel)/tree"), theirs = try Self.facts(under: "\(root)/remote/\(kernel)/tree")
            #expect(Set(mine.keys) == Set(theirs.keys) && mine.count == 2, "\(kernel): \(mine.keys.sorted()) vs \(theirs.keys.sorted())")
            for (path, facts) in mine {
                let other = try #require(theirs[path])
                #expect(facts.modinfo == other.modinfo, "\(kernel) \(path): modinfo differs")
                #expect(facts.sections.count == 2 && facts.sections == other.sections, "\(kernel) \(path): .text/.data differ")
            }
            // The probe through distcc wrote the conftest/ headers the local probe wrote.
            for header in ["functions.h", "types.h", "generic.h", "macros.h", "symbols.h", "headers.h"] {
                let a = try? String(contentsOfFile: "\(root)/local/\(kernel)/tree/conftest/\(header)", encoding: .utf8)
                let b = try? String(contentsOfFile: "\(root)/remote/\(kernel)/tree/conftest/\(header)", encoding: .utf8)
                #expect(a != nil && a == b, "\(kernel) conftest/\(header) differs between the local and the distcc probe")
            }
        }

        // A host dies while it compiles: two objects that keep a compiler busy for seconds.
        let slow = root + "/slow"
        try BuildInterruptionTests.makeSlowTree(slow)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = ["build", "--tree", slow, "--build-dir", root + "/killed", "--jobs", "2", "--json", "--distcc", farm.distccHosts] + kernelArguments
        var env = ProcessInfo.processInfo.environment
        env["NO_COLOR"] = "1"
        env["DISTCC_DIR"] = distccState
        env.removeValue(forKey: "CC")
        process.environment = env
        _ = FileManager.default.createFile(atPath: root + "/killed.json", contents: nil)
        _ = FileManager.default.createFile(atPath: root + "/killed.err", contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: root + "/killed.json")
        process.standardError = FileHandle(forWritingAtPath: root + "/killed.err")
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        // Mid-compile on the first host: a compiler proper runs in its namespace.
        let victim = farm.hosts[0]
        var compiling = false
        let started = Date()
        while !compiling, process.isRunning, Date().timeIntervalSince(started) < 180 {
            compiling = farm.processes(of: victim).contains { pid in
                ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").hasPrefix("cc1")
            }
            if !compiling { usleep(50_000) }
        }
        try #require(compiling, "no compile reached \(victim.address) within 180 s")
        farm.kill(victim)
        while process.isRunning, Date().timeIntervalSince(started) < 600 { usleep(100_000) }
        #expect(!process.isRunning)
        let stderr = (try? String(contentsOfFile: root + "/killed.err", encoding: .utf8)) ?? ""
        #expect(process.terminationStatus == 0, "\(stderr)")
        let rows = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: root + "/killed.json"))) as? [[String: Any]] ?? []
        #expect(rows.count == 2 && rows.allSatisfy { $0["succeeded"] as? Bool == true })
        // The rows say that compiles fell back to this machine.
        let notes = rows.flatMap { ($0["notes"] as? [[String: Any]]) ?? [] }.compactMap { $0["message"] as? String }
        let distccLines = kernels.flatMap { kernel in
            ((try? String(contentsOfFile: "\(root)/killed/\(kernel)/build.log", encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.contains("distcc") }
        }
        #expect(notes.contains { $0.hasPrefix("distcc: ") && $0.contains("fell back to this machine") },
                "notes \(notes); distcc in the logs: \(distccLines.prefix(12).joined(separator: "\n")); \(victim.address) log: \(farm.jobs(of: victim).count) jobs")
    }

    /// A missing launcher is one line naming it, exit 2.
    @Test func missingDistccOrCcacheIsNamed() throws {
        let empty = CLI.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: empty) }
        // make and the compiler are found; distcc and ccache are not (PATH without them).
        for (flag, tool) in [(["--distcc", "localhost"], "distcc"), (["--ccache"], "ccache")] {
            let out = try CLI.run(["build", "--tree", CLI.fixture, "--build-dir", empty + "/b"] + flag, environment: ["PATH": empty])
            #expect(out.status == 2, "\(out.stderr)")
            #expect(out.stderr.hasPrefix("error: \(tool): not found in PATH"), "\(out.stderr)")
            #expect(out.stderr.split(separator: "\n").count == 1, "\(out.stderr)")
        }
    }
}
