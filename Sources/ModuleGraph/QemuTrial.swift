import Foundation
import KernelTree
import ModuleELF
import NVBuildSupport

/// Ground truth: boots the target kernel under qemu with an initramfs whose
/// init is a tiny static loader that makes exactly one `finit_module` call per
/// module, in order, and reports errno and the kernel's messages per load.
public struct QemuTrial: Sendable {
    /// How qemu runs the guest: hardware virtualisation or its own translator.
    public enum Accelerator: String, Sendable, Codable, CaseIterable {
        case kvm, tcg
    }

    /// What the user asked for: KVM where usable (auto), or one of them.
    public enum AcceleratorChoice: String, Sendable, CaseIterable {
        case auto, kvm, tcg
    }

    /// Why KVM cannot be used here, or nil when /dev/kvm opens read-write (what qemu
    /// needs) and answers the stable API version. Checked, not assumed from the file's
    /// existence: a container may see the node without the permission to use it.
    public static func kvmProblem() -> String? {
        let fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        if fd < 0 { return "/dev/kvm: \(String(cString: strerror(errno)))" }
        defer { close(fd) }
        let version = ioctl(fd, 0xAE00)  // KVM_GET_API_VERSION
        return version == 12 ? nil : "/dev/kvm answers KVM API version \(version), not 12"
    }

    /// The accelerator to start with for `choice`: auto takes KVM when it is usable, else TCG.
    public static func accelerator(for choice: AcceleratorChoice) throws(UserError) -> Accelerator {
        switch choice {
        case .tcg: return .tcg
        case .auto: return kvmProblem() == nil ? .kvm : .tcg
        case .kvm:
            if let problem = kvmProblem() {
                throw UserError(.environment, "\(problem): KVM is not usable here (give this user read-write access to /dev/kvm, e.g. the kvm group), or use --accel tcg")
            }
            return .kvm
        }
    }

    public var kernelImage: String
    /// The format the kernel decompresses modules in itself (CONFIG_MODULE_DECOMPRESS);
    /// modules in any other format are decompressed here before the boot.
    public var kernelDecompression: ModuleCompression
    /// How the guest's loader hands compressed modules over: the file itself (kmod 31 and
    /// later, where the kernel unpacks its format), or decompressed here first (kmod 30).
    public var compressedHandoff: CompressedModuleHandoff = .kernel
    /// A boot that has not powered off by then is killed and reported.
    public var timeoutSeconds: Int
    public var memoryMegabytes: Int
    /// auto: KVM when /dev/kvm is usable, and TCG when qemu cannot run the guest under
    /// it (nested virtualisation can expose a /dev/kvm that fails on the first boot).
    public var acceleration: AcceleratorChoice
    /// Appended to the guest's kernel command line (`module.sig_enforce=1`, `lockdown=integrity`).
    public var extraCommandLine = ""

    public init(
        kernelImage: String, kernelDecompression: ModuleCompression, timeoutSeconds: Int = 180, memoryMegabytes: Int = 1024,
        acceleration: AcceleratorChoice = .auto
    ) {
        self.kernelImage = kernelImage
        self.kernelDecompression = kernelDecompression
        self.timeoutSeconds = timeoutSeconds
        self.memoryMegabytes = memoryMegabytes
        self.acceleration = acceleration
    }

    /// The trial for an installed kernel: its image in /boot and the decompression its
    /// configuration provides.
    public init(target: KernelTarget, timeoutSeconds: Int = 180, memoryMegabytes: Int = 1024, acceleration: AcceleratorChoice = .auto) {
        self.init(
            kernelImage: "/boot/vmlinuz-\(target.release)",
            kernelDecompression: KernelModel.decompression(target.config),
            timeoutSeconds: timeoutSeconds, memoryMegabytes: memoryMegabytes, acceleration: acceleration)
    }

    public struct Outcome: Sendable {
        public var results: [LoadResult]
        /// True when the boot ran to the end of the plan and powered off.
        public var completed: Bool
        public var console: String
        /// How qemu ran the guest.
        public var accelerator: Accelerator = .tcg
        /// Set when auto tried KVM and qemu could not run the guest under it: why.
        public var kvmFailure: String?
        /// The loader in the guest began (its start record was seen).
        var guestStarted = false
        /// qemu's own first complaint, if any.
        var qemuError: String?
    }

    /// Loads `loads` in order in one boot.
    public func run(_ loads: [PlannedLoad]) async throws -> Outcome {
        let first = try Self.accelerator(for: acceleration)
        guard FileManager.default.isReadableFile(atPath: kernelImage) else {
            throw UserError(.environment, "\(kernelImage) is missing or unreadable; install the kernel's image package (linux-image-…) to boot it under qemu")
        }
        guard ProcessRunner.lookup("qemu-system-x86_64") != nil else {
            throw UserError(.environment, "qemu-system-x86_64 not found; install qemu-system-x86 (scripts/setup does)")
        }
        let work = NSTemporaryDirectory() + "nvbuild-try-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }

        let loader = try await compileLoader(in: work)
        var archive = NewcArchive()
        archive.addDirectory("dev")
        archive.addDirectory("m")
        archive.addFile("init", contents: loader, mode: 0o755)
        var planText = ""
        for (index, load) in loads.enumerated() {
            let file: (bytes: [UInt8], compression: ModuleCompression)
            do {
                file = try ModuleImage.bytesForLoading(path: load.path, kernelDecompresses: kernelDecompression, handoff: compressedHandoff)
            } catch {
                throw UserError(.environment, "\(error.description); the qemu boot needs every module readable")
            }
            var flags = 0
            var suffix = ".ko"
            switch file.compression {
            case .none: break
            case .xz, .zstd, .gzip:
                flags = 4  // MODULE_INIT_COMPRESSED_FILE: the kernel unpacks it
                suffix = file.compression == .xz ? ".ko.xz" : file.compression == .zstd ? ".ko.zst" : ".ko.gz"
            }
            let name = "m/\(index)\(suffix)"
            archive.addFile(name, contents: Data(file.bytes), mode: 0o644)
            planText += "\(flags) /\(name)\n"
        }
        archive.addFile("plan", contents: Data(planText.utf8), mode: 0o644)
        let initramfs = work + "/initramfs.cpio"
        try archive.finish().write(to: URL(fileURLWithPath: initramfs))

        var outcome = try await boot(initramfs: initramfs, loads: loads, accelerator: first)
        if first == .kvm, !outcome.guestStarted {
            // qemu stopped (or hung) before the guest's init ran: KVM does not work here.
            let why = outcome.qemuError ?? "the guest never reached its init"
            guard acceleration == .auto else {
                throw UserError(.environment, "qemu could not run the guest under KVM: \(why); use --accel tcg (or auto)")
            }
            outcome = try await boot(initramfs: initramfs, loads: loads, accelerator: .tcg)
            outcome.kvmFailure = why
        }
        return outcome
    }

    /// One qemu boot of the prepared initramfs.
    private func boot(initramfs: String, loads: [PlannedLoad], accelerator: Accelerator) async throws -> Outcome {
        let pidFile = initramfs + ".pid"
        let arguments = [
            "timeout", "--kill-after=5", String(timeoutSeconds),
            "qemu-system-x86_64", "-kernel", kernelImage, "-initrd", initramfs,
            "-append", "console=ttyS0 panic=-1 loglevel=1 rdinit=/init" + (extraCommandLine.isEmpty ? "" : " " + extraCommandLine),
            "-m", String(memoryMegabytes), "-smp", "2", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
            // -cpu max: drivers that probe CPU features (crc32c-intel needs SSE4.2)
            // see a modern CPU, as on the machines the modules are meant for.
            "-accel", accelerator.rawValue, "-cpu", "max", "-pidfile", pidFile,
        ]
        // qemu's messages and the guest's console, merged as they arrive.
        var bytes: [UInt8] = []
        var stopped = false
        let status = try await ProcessRunner().stream(arguments) { chunk in
            bytes += chunk
            // After "KVM internal error" qemu pauses the guest and waits: stop it now
            // rather than at the timeout, so auto can go on under TCG.
            guard accelerator == .kvm, !stopped, Self.endContains(bytes, newBytes: chunk.count, "KVM internal error") else { return }
            stopped = true
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                kill(pid, SIGKILL)
            }
        }
        let output = String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "\r", with: "")
        let timedOut = !stopped && (status == 124 || status == 137)
        var outcome = Self.parse(console: output, loads: loads, timedOut: timedOut, timeoutSeconds: timeoutSeconds)
        outcome.accelerator = accelerator
        outcome.qemuError = output.split(separator: "\n").lazy.compactMap { line -> String? in
            // The firmware's screen escapes can precede the message on its line.
            if let start = line.range(of: "KVM internal error") { return String(line[start.lowerBound...]) }
            return line.hasPrefix("qemu-system-x86_64:") ? String(line) : nil
        }.first
        return outcome
    }

    /// Whether `text` occurs in the last `newBytes` bytes of `bytes` (or straddles their start).
    private static func endContains(_ bytes: [UInt8], newBytes: Int, _ text: String) -> Bool {
        let needle = Array(text.utf8)
        let from = max(0, bytes.count - newBytes - needle.count + 1)
        guard bytes.count - from >= needle.count else { return false }
        return (from...(bytes.count - needle.count)).contains { start in bytes[start..<start + needle.count].elementsEqual(needle) }
    }

    static func parse(console: String, loads: [PlannedLoad], timedOut: Bool, timeoutSeconds: Int) -> Outcome {
        var messages: [Int: [String]] = [:]
        var errnos: [Int: Int32] = [:]
        var completed = false
        var started = false
        for line in console.split(separator: "\n") {
            guard let start = line.range(of: "NVB-") else { continue }
            let record = line[start.lowerBound...]
            if record.hasPrefix("NVB-DONE") { completed = true; continue }
            if record.hasPrefix("NVB-START") { started = true; continue }
            let fields = record.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
            if record.hasPrefix("NVB-MSG "), fields.count == 4, let index = Int(fields[1]) {
                messages[index, default: []].append(String(fields[3]))
            } else if record.hasPrefix("NVB-LOAD "), fields.count >= 3, let index = Int(fields[1]), let value = Int32(fields[2]) {
                errnos[index] = value
            }
        }
        // The kernel keeps logging while modules load ("tsc: ...", "clocksource: ..."): a line
        // tagged with another subsystem's "name: " prefix does not belong to this load. Untagged
        // lines (e.g. "Disabling lock debugging due to kernel taint") do, and so do the module
        // signature check's own tags (lockdown's refusal, PKCS#7, mod_check_sig's "module: ").
        let loaderTags: Set<String> = ["Lockdown", "PKCS7", "module"]
        for (index, load) in loads.enumerated() {
            let names = Set([load.name, load.name.replacingOccurrences(of: "-", with: "_"), load.name.replacingOccurrences(of: "_", with: "-")])
            messages[index] = messages[index]?.filter { line in
                guard let colon = line.range(of: ": ") else { return true }
                let tag = line[..<colon.lowerBound]
                let isTag = !tag.isEmpty && tag.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }
                return !isTag || names.contains(String(tag)) || loaderTags.contains(String(tag))
            }
        }
        let results = loads.enumerated().map { index, load -> LoadResult in
            guard let errno = errnos[index] else {
                let why = timedOut ? "the boot did not finish within \(timeoutSeconds) s and was killed" : "the boot ended before this module was loaded"
                return LoadResult(module: load.name, path: load.path, loads: false, errno: 110, messages: messages[index] ?? [], notes: [.note(why)])
            }
            return LoadResult(module: load.name, path: load.path, loads: errno == 0, errno: errno, messages: messages[index] ?? [])
        }
        var outcome = Outcome(results: results, completed: completed, console: console)
        outcome.guestStarted = started
        return outcome
    }

    private func compileLoader(in directory: String) async throws -> Data {
        let source = directory + "/loader.c"
        let binary = directory + "/loader"
        try Data(Self.loaderSource.utf8).write(to: URL(fileURLWithPath: source))
        let result = try await ProcessRunner().run(["gcc", "-static", "-Os", "-o", binary, source])
        guard result.succeeded else {
            throw UserError(.environment, "gcc -static could not build the qemu loader (install gcc and libc6-dev): \(result.standardError)")
        }
        return try Data(contentsOf: URL(fileURLWithPath: binary))
    }

    /// The initramfs init (Resources/qemu-loader.c, embedded in the binary): one
    /// finit_module call per plan line, the kernel's records and the errno of each.
    static var loaderSource: String { String(decoding: PackageResources.qemu_loader_c, as: UTF8.self) }
}

/// The "newc" cpio format the kernel unpacks as an initramfs.
struct NewcArchive {
    private var data = Data()
    private var inode = 1

    mutating func addDirectory(_ name: String) {
        add(name, mode: 0o040755, contents: Data())
    }

    mutating func addFile(_ name: String, contents: Data, mode: Int) {
        add(name, mode: 0o100000 | mode, contents: contents)
    }

    mutating func finish() -> Data {
        add("TRAILER!!!", mode: 0, contents: Data(), inodeNumber: 0)
        return data
    }

    private mutating func add(_ name: String, mode: Int, contents: Data, inodeNumber: Int? = nil) {
        let fields = [
            inodeNumber ?? inode, mode, 0, 0, mode & 0o040000 != 0 ? 2 : 1, 0, contents.count, 0, 0, 0, 0,
            name.utf8.count + 1, 0,
        ]
        inode += 1
        var header = "070701"
        for field in fields { header += String(format: "%08X", field) }
        data.append(Data(header.utf8))
        data.append(Data(name.utf8))
        data.append(0)
        pad()
        data.append(contents)
        pad()
    }

    private mutating func pad() {
        while data.count % 4 != 0 { data.append(0) }
    }
}
