import Foundation
import NVBuildSupport
import TestSupport
import Testing

/// The fault suite: damaged and hostile inputs through the real `nvbuild` binary, one
/// process per input, as a user or a pipeline would meet them. Each run must end in a
/// documented way: exit 0, or exit 1/2 with every error line naming the file at fault, no
/// Foundation error text and no raw control character; never a signal (a crash) and
/// never the watchdog's timeout (a hang); and a damaged result cache never changes a
/// probe's headers.
///
/// CI runs a short campaign. `scripts/fuzz --count N --seed S` runs a long one (it sets
/// NVBUILD_FUZZ_COUNT and NVBUILD_FUZZ_SEED); each category prints one `fault:` line
/// with its counts, and an input that failed is kept in NVBUILD_FUZZ_KEEP (default: the
/// scratch folder, removed on success) so it can be replayed.
@Suite struct FaultSuiteTests {
    static let environment = ProcessInfo.processInfo.environment
    /// Inputs per category.
    static let count = environment["NVBUILD_FUZZ_COUNT"].flatMap(Int.init) ?? 60
    static let seed = environment["NVBUILD_FUZZ_SEED"].flatMap(UInt64.init) ?? 20_261_203
    /// Seconds one input may take before it counts as a hang.
    static let watchdog = environment["NVBUILD_FUZZ_TIMEOUT"].flatMap(Int.init) ?? 30

    /// How one run ended, as judged by the suite's rules.
    struct Verdict: CustomStringConvertible {
        var status: Int32
        var problem: String?
        var description: String { problem ?? "exit \(status)" }
    }

    /// Counts of one category; a problem keeps the input's path and what was wrong.
    final class Tally: @unchecked Sendable {
        let category: String
        var byStatus: [Int32: Int] = [:]
        var problems: [String] = []
        init(_ category: String) { self.category = category }

        func record(_ verdict: Verdict, input: String, arguments: [String]) {
            byStatus[verdict.status, default: 0] += 1
            if let problem = verdict.problem {
                problems.append("\(input): \(problem) (nvbuild \(arguments.joined(separator: " ")))")
            }
        }

        var total: Int { byStatus.values.reduce(0, +) }

        func finish() {
            let crashes = problems.filter { $0.contains("killed by signal") }.count
            let hangs = problems.filter { $0.contains("still running after") }.count
            print("fault: \(category): seed \(FaultSuiteTests.seed), \(total) inputs, "
                + "\(byStatus[0] ?? 0) exit 0, \(byStatus[1] ?? 0) exit 1, \(byStatus[2] ?? 0) exit 2, "
                + "\(crashes) crashes, \(hangs) hangs, \(problems.count - crashes - hangs) malformed")
            for problem in problems.prefix(20) { Issue.record(Comment(rawValue: problem)) }
        }
    }

    /// Runs nvbuild under a watchdog (coreutils `timeout`, which reports 124 when it had to
    /// stop the command) and judges the outcome. `blamed` are the paths an error may name.
    static func run(_ arguments: [String], blaming blamed: [String], environment extra: [String: String] = [:]) throws -> Verdict {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = ["--kill-after=5", String(watchdog), CLI.binary] + arguments
        var env = ProcessInfo.processInfo.environment
        env["NO_COLOR"] = "1"
        for key in ["IGNORE_PREEMPT_RT_PRESENCE", "CC"] { env.removeValue(forKey: key) }
        env.merge(extra) { $1 }
        process.environment = env
        let output = FileManager.default.temporaryDirectory.path + "/nvbuild-fault-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: output + ".out", contents: nil)
        _ = FileManager.default.createFile(atPath: output + ".err", contents: nil)
        defer {
            unlink(output + ".out")
            unlink(output + ".err")
        }
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: output + ".out"))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: output + ".err"))
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        let stdout = (try? Data(contentsOf: URL(fileURLWithPath: output + ".out"))) ?? Data()
        let stderr = (try? Data(contentsOf: URL(fileURLWithPath: output + ".err"))) ?? Data()
        // `timeout` re-raises a signal that killed the command on itself.
        if process.terminationReason == .uncaughtSignal {
            return Verdict(status: 128 + process.terminationStatus,
                           problem: "killed by signal \(process.terminationStatus) (a crash): \(tail(Array(stderr)))")
        }
        return judge(status: process.terminationStatus, stdout: Array(stdout), stderr: Array(stderr), blamed: blamed,
                     rawOutput: arguments.first == "inspect")
    }

    /// `inspect` prints modinfo's fields byte for byte, as modinfo does, so its standard
    /// output is exempt from the control-character rule; its errors are not.
    static func judge(status: Int32, stdout: [UInt8], stderr: [UInt8], blamed: [String], rawOutput: Bool = false) -> Verdict {
        switch status {
        case 124, 137: return Verdict(status: status, problem: "still running after \(watchdog) s (a hang)")
        case 0, 1, 2: break
        case 129...: return Verdict(status: status, problem: "killed by signal \(status - 128) (a crash): \(tail(stderr))")
        default: return Verdict(status: status, problem: "exit \(status), which is not a documented status")
        }
        let shown = (rawOutput ? [] : stdout) + stderr
        // C0 controls and DEL, and C1 controls as UTF-8 (C2 80...C2 9F: CSI is C2 9B).
        let controls = shown.contains { $0 < 0x20 && $0 != 0x0A && $0 != 0x09 || $0 == 0x7F }
            || zip(shown, shown.dropFirst()).contains { $0 == 0xC2 && (0x80...0x9F).contains($1) }
        if controls { return Verdict(status: status, problem: "a raw control character reached the output") }
        let text = String(decoding: stderr, as: UTF8.self)
        for leak in ["Error Domain=", "NSCocoaErrorDomain", "UserInfo=", "Fatal error", "Swift runtime failure"] where text.contains(leak) {
            return Verdict(status: status, problem: "Foundation or runtime text reached the user: \(tail(stderr))")
        }
        guard status != 0 else { return Verdict(status: status) }
        // A failure says why: an error line, or (modules verify) a verdict on standard output.
        let errors = text.split(separator: "\n").filter { $0.contains("error:") }
        if errors.isEmpty && stdout.isEmpty {
            return Verdict(status: status, problem: "exit \(status) without an error line or a verdict: \(tail(stderr))")
        }
        for line in errors where !blamed.contains(where: { line.contains($0) }) {
            return Verdict(status: status, problem: "an error line names none of \(blamed): \(line)")
        }
        return Verdict(status: status)
    }

    static func tail(_ bytes: [UInt8]) -> String {
        String(String(decoding: bytes.suffix(400), as: UTF8.self).debugDescription)
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// A kernel whose image (modules, indexes) is installed, for the categories that need one.
    static func kernelWithImage() throws -> String {
        let release = try #require(InstalledKernels.standard.first { InstalledKernels.imageProblem($0) == nil },
                                   "no standard kernel with its image installed: run scripts/setup")
        return release
    }

    // MARK: Module files

    /// Real modules in every form the kernel loads: the installed file, and copies
    /// compressed here with xz (CRC32 check, as kmod and the kernel use), zstd and gzip.
    static func moduleSeeds(in directory: String) throws -> [(name: String, bytes: [UInt8])] {
        let release = try Self.kernelWithImage()
        let path = try #require(InstalledKernels.module(release, "fs/fat/vfat.ko"), "vfat.ko of \(release) is missing")
        var plain = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        if path.hasSuffix(".xz") {
            plain = try compress(plain, with: ["xz", "-d", "-c"], in: directory)
        }
        return [
            ("vfat.ko", plain),
            ("vfat.ko.xz", try compress(plain, with: ["xz", "-c", "--check=crc32"], in: directory)),
            ("vfat.ko.zst", try compress(plain, with: ["zstd", "-q", "-c"], in: directory)),
            ("vfat.ko.gz", try compress(plain, with: ["gzip", "-n", "-c"], in: directory)),
        ]
    }

    /// Pipes `bytes` through a compressor from Debian's packages.
    static func compress(_ bytes: [UInt8], with command: [String], in directory: String) throws -> [UInt8] {
        let input = directory + "/compress-input"
        let output = directory + "/compress-output"
        try write(bytes, to: input)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "\"$@\" < '\(input)' > '\(output)'", "sh"] + command
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "\(command.joined(separator: " ")) failed")
        defer { unlink(input); unlink(output) }
        return Array(try Data(contentsOf: URL(fileURLWithPath: output)))
    }

    @Test func damagedModulesEndCleanly() throws {
        let directory = CLI.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let tally = Tally("modules")
        defer {
            tally.finish()
            if tally.problems.isEmpty { try? FileManager.default.removeItem(atPath: directory) }
        }
        let release = try Self.kernelWithImage()
        var random = SeededGenerator(seed: Self.seed)
        let seeds = try Self.moduleSeeds(in: directory)
        for index in 0..<Self.count {
            let (name, original) = seeds[index % seeds.count]
            let mutated: [UInt8]
            switch Int.random(in: 0..<4, using: &random) {
            case 0:  // damage inside the compressed stream (or the ELF itself for .ko)
                mutated = name.hasSuffix(".ko") ? Mutation.damageModule(original, using: &random) : Mutation.damage(original, using: &random)
            case 1:  // an intact stream with bytes after it
                mutated = original + (0..<Int.random(in: 1...64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            case 2:  // truncated anywhere
                mutated = Array(original.prefix(Int.random(in: 0..<original.count, using: &random)))
            default:  // ELF-level damage, then compressed as a distribution would ship it
                let plain = seeds[0].bytes
                let damaged = Mutation.damageModule(plain, using: &random)
                let compressor: [String] = name.hasSuffix(".xz") ? ["xz", "-c", "--check=crc32"]
                    : name.hasSuffix(".zst") ? ["zstd", "-q", "-c"] : name.hasSuffix(".gz") ? ["gzip", "-n", "-c"] : ["cat"]
                mutated = try Self.compress(damaged, with: compressor, in: directory)
            }
            let input = "\(directory)/\(index)-\(name)"
            try Self.write(mutated, to: input)
            let commands: [[String]] = [
                ["inspect", input],
                ["modules", "verify", "--kernel", release, "--no-deps", input],
            ]
            let arguments = commands[index % commands.count]
            let verdict = try Self.run(arguments, blaming: [input])
            tally.record(verdict, input: input, arguments: arguments)
            if verdict.problem == nil { unlink(input) }
        }
        #expect(tally.problems.isEmpty)
    }

    /// A stream that inflates far beyond any module: the reader must stop at its limit,
    /// not fill memory or run for minutes.
    @Test func compressionBombsAreRefused() throws {
        let directory = CLI.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let tally = Tally("bombs")
        defer { tally.finish() }
        // 1.25 GiB of zeros behind an ELF header's worth of bytes: more than the 1 GiB limit.
        for (suffix, compressor) in [("zst", "zstd -q -1 -c"), ("gz", "gzip -1 -n -c"), ("xz", "xz -0 -T2 -c --check=crc32")] {
            let input = "\(directory)/bomb.ko.\(suffix)"
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "{ printf '\\177ELF\\002\\001\\001'; head -c 1342177280 /dev/zero; } | \(compressor) > '\(input)'"]
            try process.run()
            process.waitUntilExit()
            try #require(process.terminationStatus == 0)
            let verdict = try Self.run(["inspect", input], blaming: [input])
            tally.record(verdict, input: input, arguments: ["inspect", input])
            #expect(verdict.status != 0, "a 1.25 GiB module was accepted from \(input)")
        }
        #expect(tally.problems.isEmpty)
    }

    // MARK: Paths that are not module files

    @Test func pathsThatAreNotFilesAreRefusedWithoutBlocking() throws {
        let directory = CLI.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let tally = Tally("paths")
        defer { tally.finish() }
        let release = try Self.kernelWithImage()
        var inputs: [String] = []
        let fifo = directory + "/fifo.ko"
        #expect(mkfifo(fifo, 0o644) == 0)
        inputs.append(fifo)
        let device = directory + "/null.ko.xz"
        if mknod(device, S_IFCHR | 0o644, dev_t((1 << 8) | 3)) == 0 { inputs.append(device) }  // root only
        let dangling = directory + "/dangling.ko"
        #expect(symlink(directory + "/no-such-file.ko", dangling) == 0)
        inputs.append(dangling)
        let folder = directory + "/folder.ko"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        inputs.append(folder)
        let unreadable = directory + "/empty.ko"
        _ = FileManager.default.createFile(atPath: unreadable, contents: Data())
        inputs.append(unreadable)
        inputs.append(directory + "/missing.ko.zst")
        for input in inputs {
            for arguments in [["inspect", input], ["modules", "verify", "--kernel", release, "--no-deps", input], ["modules", "order", "--kernel", release, input]] {
                let verdict = try Self.run(arguments, blaming: [input])
                tally.record(verdict, input: input, arguments: arguments)
                #expect(verdict.status != 0, "\(arguments) accepted \(input)")
            }
        }
        #expect(tally.problems.isEmpty)
    }

    // MARK: Module indexes

    /// A small module tree of real modules (ext4, vfat and their dependencies) indexed by
    /// the real depmod, under a root of the test's own.
    static func moduleTree(release: String, in root: String) throws -> [String] {
        let order = try CLI.run(["modules", "order", "--kernel", release, "ext4", "vfat"])
        try #require(order.status == 0, "\(order.stderr)")
        let paths = order.stdout.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("insmod ") else { return nil }
            return line.split(separator: " ").dropFirst().first.map(String.init)
        }
        try #require(!paths.isEmpty)
        let fm = FileManager.default
        for path in paths {
            let copy = root + path
            try fm.createDirectory(atPath: (copy as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try fm.copyItem(atPath: path, toPath: copy)
        }
        for name in ["modules.order", "modules.builtin", "modules.builtin.modinfo"] {
            let path = "/lib/modules/\(release)/\(name)"
            if fm.fileExists(atPath: path) { try fm.copyItem(atPath: path, toPath: "\(root)/lib/modules/\(release)/\(name)") }
        }
        let depmod = Process()
        depmod.executableURL = URL(fileURLWithPath: "/sbin/depmod")
        depmod.arguments = ["-b", root, release]
        try depmod.run()
        depmod.waitUntilExit()
        try #require(depmod.terminationStatus == 0, "depmod -b \(root) \(release) failed")
        return paths
    }

    @Test func damagedModuleIndexesEndCleanly() throws {
        let root = CLI.temporaryDirectory()
        let tally = Tally("indexes")
        defer {
            tally.finish()
            if tally.problems.isEmpty { try? FileManager.default.removeItem(atPath: root) }
        }
        let release = try Self.kernelWithImage()
        _ = try Self.moduleTree(release: release, in: root)
        let directory = "\(root)/lib/modules/\(release)"
        let baseline: CLI.Output = try CLI.run(["modules", "order", "--root", root, "--kernel", release, "ext4", "vfat"])
        #expect(baseline.status == 0, "\(baseline.stderr)")
        var random = SeededGenerator(seed: Self.seed &+ 1)
        let indexes = ["modules.dep.bin", "modules.alias.bin", "modules.symbols.bin"]
        let originals = try indexes.map { Array(try Data(contentsOf: URL(fileURLWithPath: "\(directory)/\($0)"))) }
        for index in 0..<Self.count {
            let which = index % indexes.count
            let path = "\(directory)/\(indexes[which])"
            let mutated: [UInt8]
            switch Int.random(in: 0..<3, using: &random) {
            case 0: mutated = Array(originals[which].prefix(Int.random(in: 0..<originals[which].count, using: &random)))
            case 1: mutated = (0..<Int.random(in: 0...4096, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            default: mutated = Mutation.damage(originals[which], using: &random)
            }
            try Self.write(mutated, to: path)
            let commands: [[String]] = [
                ["modules", "order", "--root", root, "--kernel", release, "ext4", "vfat"],
                ["modules", "verify", "--root", root, "--kernel", release, "ext4"],
            ]
            let arguments = commands[index % commands.count]
            let verdict = try Self.run(arguments, blaming: [path, directory])
            tally.record(verdict, input: path, arguments: arguments)
            if verdict.problem != nil {
                try Self.write(mutated, to: "\(root)/failed-\(index)-\(indexes[which])")
            }
            try Self.write(originals[which], to: path)
        }
        #expect(tally.problems.isEmpty)
    }

    // MARK: Text inputs

    /// dkms.conf and Kbuild files with invalid UTF-8, control characters and random damage.
    @Test func damagedTextInputsEndCleanly() throws {
        let directory = CLI.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let tally = Tally("text")
        defer {
            tally.finish()
            if tally.problems.isEmpty { try? FileManager.default.removeItem(atPath: directory) }
        }
        var random = SeededGenerator(seed: Self.seed &+ 2)
        let conf = Array(try Data(contentsOf: URL(fileURLWithPath: CLI.repository + "/Tests/Fixtures/dkms/debian-nvidia-current.conf")))
        let hostile: [[UInt8]] = [[0xFF], [0xC3], [0xE2, 0x82], [0x1B] + Array("[2J".utf8), [0x00], [0x07], [0x9B]]
        for index in 0..<Self.count {
            var bytes = index % 2 == 0 ? Mutation.damage(conf, using: &random) : conf
            let at = Int.random(in: 0...bytes.count, using: &random)
            bytes.insert(contentsOf: hostile.randomElement(using: &random)!, at: at)
            let input = "\(directory)/\(index)-dkms.conf"
            try Self.write(bytes, to: input)
            let arguments = ["dkms", "lint", input]
            let verdict = try Self.run(arguments, blaming: [input])
            tally.record(verdict, input: input, arguments: arguments)
            if verdict.problem == nil { unlink(input) }
        }
        // Kbuild: `dkms package` reads the tree's Kbuild to learn its modules.
        let tree = directory + "/tree"
        try FileManager.default.copyItem(atPath: CLI.fixture, toPath: tree)
        let kbuild = tree + "/Kbuild"
        let original = Array(try Data(contentsOf: URL(fileURLWithPath: kbuild)))
        for index in 0..<max(4, Self.count / 6) {
            var bytes = original
            bytes.insert(contentsOf: hostile.randomElement(using: &random)!, at: Int.random(in: 0...bytes.count, using: &random))
            try Self.write(bytes, to: kbuild)
            let output = "\(directory)/package-\(index)"
            let arguments = ["dkms", "package", "--tree", tree, "--name", "nvfault", "--version", "1.0", "--output", output]
            let verdict = try Self.run(arguments, blaming: [kbuild])
            tally.record(verdict, input: kbuild, arguments: arguments)
            if verdict.status != 0 {
                #expect(!FileManager.default.fileExists(atPath: output + "/nvfault-1.0"), "a refused package left \(output)")
            }
        }
        #expect(tally.problems.isEmpty)
    }

    // MARK: Trusted certificates

    /// `modules verify --secure-boot --trust CERT` with a damaged certificate (PEM and DER, cut,
    /// flipped, grown) and a module whose signature trailer is damaged: every run ends with a
    /// verdict or one error line naming the certificate or the module.
    @Test func damagedCertificatesAndSignaturesEndCleanly() async throws {
        let release = try Self.kernelWithImage()
        let directory = CLI.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let tally = Tally("certificates")
        defer {
            tally.finish()
            if tally.problems.isEmpty { try? FileManager.default.removeItem(atPath: directory) }
        }
        var random = SeededGenerator(seed: Self.seed &+ 7)
        let made = try await ProcessRunner().run([
            "openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=nvbuild fault", "-days", "2",
            "-keyout", directory + "/seed.key", "-out", directory + "/seed.pem",
        ])
        try #require(made.succeeded, "openssl req: \(made.standardError)")
        let der = try await ProcessRunner().run(["openssl", "x509", "-in", directory + "/seed.pem", "-outform", "DER", "-out", directory + "/seed.der"])
        try #require(der.succeeded)
        let seeds = [
            ("pem", Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/seed.pem")))),
            ("der", Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/seed.der")))),
        ]
        let modules = try Self.moduleSeeds(in: directory)
        let module = directory + "/plain.ko"
        try Self.write(modules[0].bytes, to: module)
        for index in 0..<max(6, Self.count / 6) {
            let (suffix, original) = seeds[index % 2]
            let certificate = "\(directory)/\(index).\(suffix)"
            try Self.write(Mutation.damage(original, using: &random), to: certificate)
            let arguments = ["modules", "verify", "--secure-boot", "--no-mok", "--kernel", release, "--no-deps", "--trust", certificate, module]
            let verdict = try Self.run(arguments, blaming: [certificate])
            tally.record(verdict, input: certificate, arguments: arguments)
            if verdict.problem == nil { unlink(certificate) }
        }
        // The signature trailer of a signed module, damaged: its last kilobyte.
        let signed = modules[0].bytes
        for index in 0..<max(6, Self.count / 6) {
            var bytes = signed
            let tail = Mutation.damage(Array(signed.suffix(1024)), using: &random)
            bytes.replaceSubrange((signed.count - 1024)..., with: tail)
            let input = "\(directory)/signature-\(index).ko"
            try Self.write(bytes, to: input)
            let arguments = ["modules", "verify", "--secure-boot", "--no-mok", "--kernel", release, "--no-deps", input]
            let verdict = try Self.run(arguments, blaming: [input])
            tally.record(verdict, input: input, arguments: arguments)
            if verdict.problem == nil { unlink(input) }
        }
        #expect(tally.problems.isEmpty)
    }

    // MARK: Cache entries

    /// A shared or synced cache where entries were copied over each other, truncated or
    /// damaged: the probe's headers stay the reference's (the golden files) every time.
    @Test func crossLinkedCacheEntriesNeverChangeAResult() throws {
        let kernel = try CLI.standardKernel("6.1.")
        let golden = try GoldenFiles.directory(for: kernel).get()
        let cache = CLI.temporaryDirectory(), outDir = CLI.temporaryDirectory()
        let tally = Tally("cache")
        defer {
            tally.finish()
            try? FileManager.default.removeItem(atPath: outDir)
            if tally.problems.isEmpty { try? FileManager.default.removeItem(atPath: cache) }
        }
        let probe = ["probe", "--quiet", "--tree", CLI.fixture, "--kernel", kernel, "--cache-dir", cache, "--output", outDir]
        let cold = try CLI.run(probe)
        try #require(cold.status == 0, "\(cold.stderr)")
        let fm = FileManager.default
        let entries = try fm.contentsOfDirectory(atPath: cache).filter { $0.count == 2 }.sorted().flatMap { folder in
            try fm.contentsOfDirectory(atPath: "\(cache)/\(folder)").sorted().map { "\(cache)/\(folder)/\($0)" }
        }
        try #require(entries.count >= 2)
        var random = SeededGenerator(seed: Self.seed &+ 3)
        // Each probe run recompiles what it rejects, so keep the campaign to a few runs.
        for round in 0..<max(3, Self.count / 10) {
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let from = entries.randomElement(using: &random)!, to = entries.randomElement(using: &random)!
                guard let bytes = fm.contents(atPath: from) else { continue }
                let damaged = Bool.random(using: &random) ? Array(bytes) : Mutation.damage(Array(bytes), using: &random)
                try Self.write(damaged, to: to)
            }
            let verdict = try Self.run(probe, blaming: [cache])
            tally.record(verdict, input: "\(cache) (round \(round))", arguments: probe)
            #expect(verdict.status == 0, "round \(round): \(verdict)")
            for header in ["functions", "generic", "macros", "symbols", "types", "headers", "patches"] {
                let mine = fm.contents(atPath: "\(outDir)/\(header).h")
                #expect(mine == fm.contents(atPath: "\(golden)/\(header).h"), "round \(round): \(header).h differs from the reference")
            }
        }
        #expect(tally.problems.isEmpty)
    }

    // MARK: Trees with hostile symlinks

    @Test func hostileSymlinksInTreesAreNamed() throws {
        let directory = CLI.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let tally = Tally("symlinks")
        defer { tally.finish() }
        let links: [(name: String, target: String)] = [
            ("passwd.c", "/etc/passwd"),
            ("dangling.c", "no-such-file.c"),
            ("outside.c", "../../../../../../../../etc/hostname"),
            ("loop", "."),
            ("self.h", "self.h"),
        ]
        for (index, link) in links.enumerated() {
            let tree = "\(directory)/tree-\(index)"
            try FileManager.default.copyItem(atPath: CLI.fixture, toPath: tree)
            let path = "\(tree)/nvfixture/\(link.name)"
            #expect(symlink(link.target, path) == 0)
            let output = "\(directory)/out-\(index)"
            let arguments = ["dkms", "package", "--tree", tree, "--name", "nvfault", "--version", "1.0", "--output", output]
            let verdict = try Self.run(arguments, blaming: [path])
            tally.record(verdict, input: path, arguments: arguments)
            #expect(verdict.status != 0, "a package was written with \(link.name) -> \(link.target)")
            #expect(!FileManager.default.fileExists(atPath: output + "/nvfault-1.0"))
        }
        #expect(tally.problems.isEmpty)
    }
}
